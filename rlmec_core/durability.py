"""Durable writes on POSIX: a file's data is fsynced by its writer, and the entry that names
it (creation, rename) only once its directory is fsynced too."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
