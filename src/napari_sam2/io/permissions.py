"""Outputs written atomically (to a temporary name, then renamed) get the permissions of a plain new file or folder.

``tempfile.mkstemp`` and ``mkdtemp`` make private entries (0600, 0700) so that nobody else can touch them while
they are written; a result renamed into place from them would stay private, unreadable to the other users of a
shared server. ``as_created`` gives it what ``open`` or ``mkdir`` would have: 0666 or 0777 less the umask.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and back, under a lock: there is no call that only reads it)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def as_created(path) -> None:
    """Give ``path`` (a file or folder, not its contents) the mode a plain ``open`` or ``mkdir`` would give it."""
    path = Path(path)
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())
