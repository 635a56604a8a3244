"""Running SAM2 work off napari's GUI thread, one job at a time, with failures turned into messages a user can act
on (shown as notifications by the widget, never as a traceback dialog)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

from napari.qt.threading import thread_worker

from ..errors import Sam2Error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """What a job returns when it failed: the message for the user."""

    message: str


@dataclass(frozen=True)
class RunStarted:
    """Yielded by a propagation job before its first frame: how many frames to expect, and what is done."""

    total: int
    description: str


def user_message(error: BaseException) -> str:
    """A message that says what went wrong and what to do."""
    if isinstance(error, Sam2Error):
        return str(error)
    if type(error).__name__ == "OutOfMemoryError":  # torch's CUDA out-of-memory error, raised outside the tracker
        return (
            "The GPU ran out of memory. Choose a smaller model (e.g. sam2.1_hiera_tiny), close other programs using "
            "the GPU, or choose device 'cpu'."
        )
    if isinstance(error, MemoryError):
        return "Not enough memory (RAM) for this stack: close other programs, or crop the stack or use a smaller model."
    return (
        f"SAM2 stopped on an unexpected error ({type(error).__name__}: {error}). The details are in the terminal; "
        "please report them at the napari-sam2 issue tracker."
    )


def _guarded(steps: Callable[[], Iterator]):
    """Run ``steps`` and pass on what it yields; a failure ends the job with a Failure instead of an exception."""
    try:
        yield from steps()
    except Exception as error:  # every failure becomes a notification; the traceback goes to the log
        if not isinstance(error, Sam2Error):
            logger.exception("napari-sam2 job failed")
        return Failure(user_message(error))
    return None


def start_job(steps: Callable[[], Iterator], on_yielded, on_failure, on_finished):
    """Start ``steps`` (a generator function) in a worker thread; results reach the GUI thread through
    ``on_yielded``, a failure through ``on_failure(message)``, and ``on_finished()`` comes last in every case
    (done, failed or cancelled with ``worker.quit()``)."""
    worker = thread_worker(_guarded, start_thread=False)(steps)
    worker.yielded.connect(on_yielded)
    worker.returned.connect(lambda value: on_failure(value.message) if isinstance(value, Failure) else None)
    worker.finished.connect(on_finished)
    worker.start()
    return worker
