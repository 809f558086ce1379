"""Files and folders only their owner may read: the database (everyone's chat history), its
-wal/-shm, backups and the engine's log.

Outside the systemd unit (which sets ``UMask=0077``) the usual umask 022 makes new files
world-readable. Parley does not change the process umask (that would reach every library's
files too); it creates what it owns with mode 600, and the folders it makes with mode 700.
Folders and files that already exist are left as they are: the operator chose them.
SQLite gives a database's -wal, -shm and -journal files the mode of the database file, so
creating that file private first is enough for all of them. Blocking calls; any thread.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode 700 (``mkdir -p`` would give the
    parents the umask's mode); existing ones are not touched. OSError if it cannot be made."""
    missing: list[Path] = []
    for each in (folder, *folder.parents):
        if each.is_dir():
            break
        missing.append(each)
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile (another process)
            each.mkdir(mode=FOLDER_MODE)
    if not folder.is_dir():  # e.g. a file is in the way: say so as mkdir would
        folder.mkdir(exist_ok=True)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 600 unless it exists; whether it was created. An
    existing file keeps its mode. OSError (IsADirectoryError, PermissionError...) as open()."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def open_private_append(path: Path) -> int:
    """A file descriptor appending to ``path``, created with mode 600 if it is missing."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
