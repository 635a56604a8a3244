"""Running SAM2 work off napari's GUI thread for the tracking controller (``qt_runner``), with failures turned into
messages a user can act on (``user_message``; shown as notifications by the widget, never as a traceback dialog)."""

from __future__ import annotations

import logging

from ...errors import Sam2Error, out_of_memory_error

logger = logging.getLogger(__name__)


def user_message(error: BaseException) -> str:
    """A message that says what went wrong and what to do."""
    if isinstance(error, Sam2Error):
        return str(error)
    out_of_memory = out_of_memory_error(error)  # the GPU's or the computer's, wherever it was raised
    if out_of_memory is not None:
        return str(out_of_memory)
    return (
        f"SAM2 stopped on an unexpected error ({type(error).__name__}: {error}). The details are in the terminal; "
        "please report them at the napari-sam2 issue tracker."
    )


def qt_runner(job, deliver, done):
    """The controller's runner in napari: ``job(post)`` runs in a ``thread_worker``; what it yields or posts reaches
    ``deliver`` on the GUI thread, in order, and ``done(error_or_None)`` comes last, once. Returns the worker."""
    from napari.qt.threading import thread_worker

    outcome: dict = {}

    def work():
        try:
            yield from job(lambda item: worker.yielded.emit(item))  # posted from inside a blocking call
        except Exception as error:  # the controller turns it into a message; unexpected ones are logged there
            outcome["error"] = error

    worker = thread_worker(work, start_thread=False)()
    worker.yielded.connect(deliver)
    worker.errored.connect(lambda error: outcome.setdefault("error", error))
    worker.finished.connect(lambda: done(outcome.get("error")))
    worker.start()
    return worker
