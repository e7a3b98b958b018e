"""Atomic file writes: a reader (or a process killed half-way) never sees a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it is fsynced and renamed over it.

    On an exception the temporary file is removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner alone; give it the mode open() would have.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(current)
    return current


def write_text(destination: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``destination`` atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text)
