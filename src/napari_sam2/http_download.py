"""Downloading one file over HTTP safely: resume, retries, size and SHA-256 checks, atomic rename.

Stdlib only. Knows nothing about models; `napari_sam2.models` decides what to fetch and where.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from . import __version__
from .errors import CheckpointError, InputError

Progress = Callable[[int, Optional[int]], None]
"""Called as progress(bytes_done, bytes_total_or_None) while a download runs."""

ATTEMPTS = 3
RETRY_DELAYS_S = (1.0, 3.0)  # pause before the 2nd and the 3rd attempt
TIMEOUT_S = 30.0  # per connect / per read; a stalled connection is retried, then reported
CHUNK_BYTES = 1 << 20
STALE_PART_S = 120.0  # a .part untouched this long belongs to a download that died
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def _hash_file(path: Path):
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            hasher.update(block)
    return hasher


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as lowercase hex."""
    return _hash_file(Path(path)).hexdigest()


class _PartFile:
    """The partial download on disk and the SHA-256 of its bytes, kept in step across retries."""

    def __init__(self, path: Path):
        self.path = path
        self._hasher = hashlib.sha256()
        self._hashed = 0

    def size(self) -> int:
        """Bytes already on disk; re-hashes them when they come from an earlier run."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self._hashed:
            self._hasher = _hash_file(self.path)
            self._hashed = size
        return size

    def reset(self) -> None:
        self._write_error_guard(lambda: open(self.path, "wb").close())
        self._hasher = hashlib.sha256()
        self._hashed = 0

    def open_append(self):
        return self._write_error_guard(lambda: open(self.path, "ab"))

    def append(self, handle, chunk: bytes) -> None:
        self._write_error_guard(lambda: handle.write(chunk))
        self._hasher.update(chunk)
        self._hashed += len(chunk)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def _write_error_guard(self, action):
        # A full disk is the user's to fix, not a network hiccup to retry.
        try:
            return action()
        except OSError as exc:
            raise CheckpointError(
                f"Cannot write {self.path}: {exc}. Free disk space, or set NAPARI_SAM2_CACHE to another folder."
            ) from exc


class _ClaimedPart:
    """Claims `<final>.part` for this download, or a private temp file when another download holds it.

    The claim is a `<final>.part.lock` file created exclusively; a lock whose download has written
    nothing for STALE_PART_S is taken over, so a crashed run does not block resuming forever.
    """

    def __init__(self, dest: Path):
        self.shared = dest.with_name(dest.name + ".part")
        self.lock = dest.with_name(dest.name + ".part.lock")
        self.dest = dest
        self.path: Path = self.shared
        self.private = False

    def __enter__(self) -> "_ClaimedPart":
        try:
            if not self._take_lock():
                fd, name = tempfile.mkstemp(dir=self.dest.parent, prefix=self.dest.name + ".", suffix=".part")
                os.close(fd)
                self.path, self.private = Path(name), True
        except OSError as exc:
            raise CheckpointError(
                f"Cannot create files in {self.dest.parent}: {exc}. Set NAPARI_SAM2_CACHE to a writable folder."
            ) from exc
        return self

    def __exit__(self, *exc_info) -> None:
        if self.private:
            _unlink(self.path)  # nobody can resume a private part
        else:
            _unlink(self.lock)

    def touch(self) -> None:
        if not self.private:
            try:
                os.utime(self.lock)
            except OSError:
                pass

    def _take_lock(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._lock_is_stale():
                    return False
                _unlink(self.lock)
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        return False

    def _lock_is_stale(self) -> bool:
        times = []
        for path in (self.lock, self.shared):
            try:
                times.append(path.stat().st_mtime)
            except OSError:
                pass
        return bool(times) and time.time() - max(times) > STALE_PART_S


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _total_size(response, have: int, part: _PartFile) -> tuple[int | None, int]:
    """(full file size or None, bytes kept) from the headers; restarts the part if the server ignored Range."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match is None or int(match[1]) != have:
            part.reset()
            raise ConnectionError("the server sent a different byte range than asked for")
        total = int(match[3]) if match[3] != "*" else (have + length if length is not None else None)
        return total, have
    if have:
        part.reset()  # the server does not do Range requests: start over
    return length, 0


def _fetch_once(url: str, part: _PartFile, progress: Progress | None) -> int | None:
    """One HTTP request appending to the part file. Returns the expected full size (None if unknown)."""
    have = part.size()
    headers = {"User-Agent": f"napari-sam2/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        total, done = _total_size(response, have, part)
        if progress is not None:
            progress(done, total)
        with part.open_append() as handle:
            while chunk := response.read(CHUNK_BYTES):
                part.append(handle, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise ConnectionError(f"the connection closed after {done} of {total} bytes")
    return total


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved (is this computer offline?)"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused (offline, or a firewall?)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT_S:g} s"
    return str(reason) or type(reason).__name__


def _fetch_with_retries(
    url: str, claim: _ClaimedPart, progress: Progress | None, hint: str
) -> tuple[_PartFile, int | None]:
    part = _PartFile(claim.path)
    last_error: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1])
        claim.touch()
        try:
            return part, _fetch_once(url, part, progress)
        except urllib.error.HTTPError as exc:
            last_error = exc
            if exc.code == 416:  # our part is longer than the file: it is not the same file
                part.reset()
            elif exc.code not in _RETRYABLE_HTTP:
                break  # 404, 403...: asking again will not help
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
            last_error = exc
    final = isinstance(last_error, urllib.error.HTTPError) and last_error.code not in _RETRYABLE_HTTP
    tries = "" if final else f" after {ATTEMPTS} attempts"
    raise CheckpointError(
        f"Could not download {claim.dest.name} from {url}{tries}: {_describe(last_error)}. {hint}".rstrip()
    ) from last_error


def check_url(url: str) -> None:
    """Refuse anything but an http(s) URL with a host, before any file is created."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"Cannot download from {url!r}: give an http:// or https:// URL.")


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None,
                  progress: Progress | None = None, hint: str = "") -> str:
    """Download `url` to `dest` and return the file's SHA-256.

    Streams into `<dest>.part`, resuming it with an HTTP Range request when the server allows,
    retries dropped connections, checks the announced size and `sha256` (when given), and only
    then renames the file into place: `dest` never holds a broken file. `hint` ends every error
    message (e.g. how to fetch the file by hand).
    """
    dest = Path(dest)
    check_url(url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"Cannot create the folder {dest.parent}: {exc}. Set NAPARI_SAM2_CACHE to a writable folder."
        ) from exc
    with _ClaimedPart(dest) as claim:
        part, total = _fetch_with_retries(url, claim, progress, hint)
        size = claim.path.stat().st_size
        if total is not None and size != total:
            _unlink(claim.path)
            raise CheckpointError(
                f"The download of {dest.name} from {url} has {size} bytes, but the server announced {total}. "
                f"The partial file was deleted; run the download again. {hint}".rstrip()
            )
        digest = part.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            _unlink(claim.path)
            raise CheckpointError(
                f"The download of {dest.name} from {url} is corrupt: SHA-256 {digest}, expected {sha256}. "
                f"The partial file was deleted; run the download again. {hint}".rstrip()
            )
        try:
            os.replace(claim.path, dest)
        except OSError as exc:
            raise CheckpointError(
                f"Cannot move the download into place at {dest}: {exc}. Close programs using it and retry."
            ) from exc
    return digest


class TextProgressBar:
    """A progress display on stderr: a redrawn bar on a terminal, a line per 10 % elsewhere.

    Use as the `progress(done, total)` callable of `download` (bytes, shown in MB) or of a segmentation
    (``unit="frames"``: counts shown as they are), then call `close()`.
    """

    def __init__(self, label: str, stream=None, width: int = 30, unit: str = "MB"):
        self.label = label
        self.unit = unit
        self._scale = 1e6 if unit == "MB" else 1
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_tenth = -1
        self._drawn = False
        self._state: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self._state = (done, total)
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or done == total:
                self._last_draw = now
                self.stream.write("\r" + self._line(done, total))
                self.stream.flush()
                self._drawn = True
        elif total:
            tenth = done * 10 // total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self._line(done, total) + "\n")
                self.stream.flush()

    def close(self) -> None:
        """End the display: finish the terminal line, or report the size when no total was known."""
        if self._drawn:
            self.stream.write("\n")
        elif self._state is not None and not self._tty and not self._state[1]:
            self.stream.write(self._line(*self._state) + "\n")
        self.stream.flush()
        self._drawn = False

    def _line(self, done: int, total: int | None) -> str:
        if not total:
            return f"{self.label}  {self._amount(done)} {self.unit}"
        filled = min(self.width, done * self.width // total)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label}  [{bar}] {self._amount(done)}/{self._amount(total)} {self.unit} {done * 100 // total:3d}%"

    def _amount(self, count: int) -> str:
        return f"{count / self._scale:.1f}" if self._scale != 1 else str(count)
