"""Fetching one file over HTTP(S) safely: pooch (hash check, atomic move into place) with what it does not do on
top (resuming `<file>.part` with a Range request, retries that resume and never repeat a 404, one `.part` per file
claimed with filelock, errors that say what to do). Knows nothing of models: `models.py` names the files."""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from .. import __version__
from ..errors import CheckpointError, InputError, Sam2Error

Progress = Callable[[int, Optional[int]], None]
"""Called as progress(bytes_done, bytes_total_or_None) while a download runs (the widget and the CLI show it)."""

ATTEMPTS = 3
RETRY_DELAYS_S = (1.0, 3.0)  # pause before the 2nd and the 3rd attempt
TIMEOUT_S = 30.0  # per connect / per read; a stalled connection is retried, then reported
CHUNK_BYTES = 1 << 20
STALE_PART_S = 120.0  # a claimed .part untouched this long belongs to a download that died
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as lowercase hex."""
    import pooch

    return pooch.file_hash(os.fspath(path), alg="sha256")


def file_hash(path: str | os.PathLike, alg: str) -> str:
    """The hash of a file with any algorithm pooch knows ("sha256", "md5", "xxh128" with the xxhash package...), as
    lowercase hex."""
    import pooch

    check_hash_algorithm(alg)
    return pooch.file_hash(os.fspath(path), alg=alg)


def check_hash_algorithm(alg: str) -> None:
    """Refuse a hash algorithm this Python cannot compute, with what to install (xxh* need the xxhash package)."""
    import hashlib

    if alg in hashlib.algorithms_available:
        return
    if alg.startswith("xxh"):
        try:
            import xxhash
        except ImportError:
            raise CheckpointError(
                f"Checking this checkpoint's {alg} hash needs the xxhash package: pip install xxhash"
            ) from None
        if hasattr(xxhash, alg):
            return
    raise CheckpointError(f"Unknown hash algorithm {alg!r}: cannot check the checkpoint.")


def _pooch_hash(known_hash: str | None) -> str | None:
    """pooch's "ALG:HEX" form of a known hash (a bare hex string is a SHA-256), its algorithm checked first."""
    if not known_hash:
        return None
    alg, sep, value = known_hash.partition(":")
    if not sep:
        alg, value = "sha256", known_hash
    check_hash_algorithm(alg.lower())
    return f"{alg.lower()}:{value.lower()}"


def check_url(url: str) -> None:
    """Refuse anything but an http(s) URL with a host, before any file is created."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"Cannot download from {url!r}: give an http:// or https:// URL.")

def fetch(
    url: str, dest: Path, known_hash: str | None = None, progress: Progress | None = None, hint: str = ""
) -> None:
    """Download `url` into `dest` (an http(s) URL; `dest`'s folder must exist): resumed from `<dest>.part` after an
    interruption, retried, checked against `known_hash` when given (pooch; "ALG:HEX" such as "xxh128:...", or a
    bare SHA-256 hex), and only then moved into place, so `dest` never holds a broken file. `progress(done, total)` in bytes. Errors are CheckpointError naming the URL, `dest`
    and what to do, ending with `hint`."""
    check_url(url)
    pooch_hash = _pooch_hash(known_hash)  # before anything is downloaded: an algorithm we cannot check fails now
    import pooch

    with _pooch_quiet():
        try:
            pooch.retrieve(
                url, known_hash=pooch_hash, fname=dest.name,
                path=dest.parent, downloader=_ResumingDownloader(dest, progress, hint),
            )
        except Sam2Error:
            raise
        except ValueError as exc:  # pooch's hash check failed; it already deleted the download
            raise CheckpointError(
                f"The download of {dest.name} from {url} is corrupt: {exc} Nothing was kept; "
                f"run the download again. {hint}".rstrip()
            ) from exc
        except OSError as exc:  # pooch's temporary file or its move into place
            raise CheckpointError(
                f"Cannot write {dest}: {exc}. Free disk space, or set NAPARI_SAM2_CACHE to another folder."
            ) from exc


class _ResumingDownloader:
    """A pooch downloader: fetches into `<dest>.part` (resumed with a Range request, retried), then hands it to pooch."""

    def __init__(self, dest: Path, progress: Progress | None, hint: str):
        self.dest, self.progress, self.hint = dest, progress, hint

    def __call__(self, url: str, output_file: str, pooch_instance, check_only: bool = False) -> None:
        with _claimed_part(self.dest) as (part, lock_file):
            self._fetch_with_retries(url, part, lock_file)
            os.replace(part, output_file)

    def _fetch_with_retries(self, url: str, part: Path, lock_file: Path | None) -> None:
        import requests

        last_error: BaseException | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1])
            if lock_file is not None:
                _touch(lock_file)
            try:
                return self._fetch_once(url, part)
            except requests.HTTPError as exc:
                last_error = exc
                if _status(exc) == 416:  # our part is longer than the file: it is not the same file
                    part.write_bytes(b"")
                elif _status(exc) not in _RETRYABLE_HTTP:
                    break  # 404, 403...: asking again will not help
            except (requests.RequestException, _Interrupted) as exc:  # refused, reset, timed out, cut short
                last_error = exc
            except OSError as exc:  # the part file: a full disk is the user's to fix, not a network hiccup
                raise CheckpointError(
                    f"Cannot write {part}: {exc}. Free disk space, or set NAPARI_SAM2_CACHE to another folder."
                ) from exc
        final = isinstance(last_error, requests.HTTPError) and _status(last_error) not in _RETRYABLE_HTTP
        tries = "" if final else f" after {ATTEMPTS} attempts"
        raise CheckpointError(
            f"Could not download {self.dest.name} from {url}{tries}: {_describe(last_error)}. {self.hint}".rstrip()
        ) from last_error

    def _fetch_once(self, url: str, part: Path) -> None:
        import pooch

        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"napari-sam2/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        with open(part, "ab") as handle:
            meter = _Meter(handle, have, self.progress)
            fetch = pooch.HTTPDownloader(
                progressbar=meter, chunk_size=CHUNK_BYTES, headers=headers, timeout=TIMEOUT_S,
                hooks={"response": meter.on_response},
            )
            fetch(url, handle, None)
            if meter.size is not None and meter.done < meter.size:
                raise _Interrupted(f"the connection closed after {meter.done} of {meter.size} bytes")


class _Interrupted(Exception):
    """A download attempt that ended early or got the wrong bytes: worth another (resuming) attempt."""


class _Meter:
    """What pooch.HTTPDownloader reports to (its tqdm-like `progressbar`), plus a requests response hook.

    The hook sees the answer before its body: a resumed part is kept only for a 206 of the asked range, and is
    started over when the server ignored the Range header. Progress is reported in bytes of the whole file.
    """

    def __init__(self, handle, have: int, progress: Progress | None):
        self.handle, self.have, self.progress = handle, have, progress
        self.done, self.size = have, None
        self.total = None  # set by pooch from this answer's Content-Length; `size` is the whole file's

    def on_response(self, response, *args, **kwargs):
        if response.status_code not in (200, 206):
            return response  # redirects go on; errors are raised by pooch
        length = response.headers.get("Content-Length", "")
        length = int(length) if length.isdigit() else None
        if response.status_code == 206:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != self.have:
                self._start_over()
                raise _Interrupted("the server sent a different byte range than asked for")
            self.size = int(match[3]) if match[3] != "*" else (self.have + length if length is not None else None)
        else:
            if self.have:
                self._start_over()  # the server does not do Range requests
            self.size = length
        # Keep every byte of an answer cut short (urllib3 would drop its last chunk); _fetch_once notices the cut.
        response.raw.enforce_content_length = False
        self._report()
        return response

    def update(self, _chunk_bytes: int) -> None:
        self.done = self.handle.tell()  # pooch has written and flushed the chunk
        self._report()

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _start_over(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.have = self.done = 0

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.size)


@contextmanager
def _claimed_part(dest: Path) -> Iterator[tuple[Path, Path | None]]:
    """(`<dest>.part`, its lock file) for this download; (a private temp file, None) while another download holds the
    lock. filelock frees the lock of a dead process on this host; a lock whose files sat untouched STALE_PART_S is
    taken over too (a crash on another computer sharing the folder, or a lock left by an older version)."""
    from filelock import SoftFileLock

    part = dest.with_name(dest.name + ".part")
    lock_file = dest.with_name(dest.name + ".part.lock")
    lock = SoftFileLock(lock_file, timeout=0)
    try:
        held = _take(lock, lock_file, part)
        if not held:
            fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
            os.close(fd)
    except OSError as exc:
        raise CheckpointError(
            f"Cannot create files in {dest.parent}: {exc}. Set NAPARI_SAM2_CACHE to a writable folder."
        ) from exc
    if not held:
        try:
            yield Path(name), None
        finally:
            Path(name).unlink(missing_ok=True)  # nobody can resume a private part
        return
    try:
        yield part, lock_file
    finally:
        try:
            if part.stat().st_size == 0:
                part.unlink()  # nothing to resume
        except OSError:
            pass
        lock.release()


def _take(lock, lock_file: Path, part: Path) -> bool:
    from filelock import Timeout

    for _ in range(2):
        try:
            lock.acquire()
            return True
        except Timeout:
            if not _untouched_for(STALE_PART_S, lock_file, part):
                return False
            lock_file.unlink(missing_ok=True)
    return False


def _untouched_for(seconds: float, *paths: Path) -> bool:
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return bool(times) and time.time() - max(times) > seconds


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _status(exc) -> int | None:
    response = getattr(exc, "response", None)
    return None if response is None else response.status_code


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and what it wraps (requests -> urllib3 -> socket), outermost first."""
    for _ in range(10):
        if exc is None:
            return
        yield exc
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__cause__
        exc = inner


def _describe(exc: BaseException | None) -> str:
    import requests
    import urllib3

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"the server answered HTTP {exc.response.status_code} {exc.response.reason}"
    causes = list(_causes(exc))
    if any(isinstance(c, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for c in causes):
        return "the host name could not be resolved (is this computer offline?)"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "the connection was refused (offline, or a firewall?)"
    if any(isinstance(c, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)) for c in causes):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke off before the end of the file"
    return str(exc) or type(exc).__name__


_quiet = threading.local()


class _MutePoochInfo(logging.Filter):
    """pooch logs every download on stderr at INFO ("Downloading data from...", and for a file without a known hash
    advice meant for pooch's own users). Our callers show progress and errors themselves; other pooch users keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not getattr(_quiet, "active", False)


@contextmanager
def _pooch_quiet():
    import pooch

    logger = pooch.get_logger()
    if not any(isinstance(f, _MutePoochInfo) for f in logger.filters):
        logger.addFilter(_MutePoochInfo())
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = False
