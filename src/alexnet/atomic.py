"""Atomic file writes: a reader (or a process killed half-way) never sees a partial file, and a full disk or a
folder we may not write to is one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alexnet.errors import InputError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "is a folder; give a file name",
}


def _unwritable(destination: Path, error: BaseException) -> InputError | None:
    """A one-line error for a write that failed for want of space or permission (torch.save reports a
    full disk as a RuntimeError about stream positions), else None."""
    if isinstance(error, OSError) and error.errno in _REASONS:
        return InputError(f"{destination}: {_REASONS[error.errno]}")
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        return InputError(f"{destination}: {_REASONS[errno.ENOSPC]} (the write stopped short)")
    return None


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it is fsynced and renamed over it.

    On an exception the temporary file is removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    except FileExistsError:  # mkdir over a file
        raise InputError(f"{destination.parent}: {_REASONS[errno.ENOTDIR]}") from None
    except OSError as error:
        raise (_unwritable(destination, error) or error) from None
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner alone; give it the mode open() would have.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, destination)
    except (OSError, RuntimeError) as error:
        if (mapped := _unwritable(destination, error)) is not None:
            raise mapped from None
        raise
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
