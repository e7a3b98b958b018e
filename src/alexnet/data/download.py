"""Fetch official dataset and weight files, verify their checksums, and move them into place atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from alexnet.errors import InputError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest (``md5``, ``sha256``, ...) of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    """Hex md5 of a file."""
    return file_digest(path, "md5")


def _fetch(url: str, partial: Path, *, timeout_s: float) -> None:
    # Resumes a partial file with an HTTP Range request; a server that ignores Range restarts it.
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        resumed = have and getattr(response, "status", 200) == 206
        length = response.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length else None
        done = have if resumed else 0
        name = partial.name.removesuffix(".part")
        # A progress bar on a terminal; elsewhere (logs, CI) a line every few seconds.
        bar = _progress_bar(name, total, done) if sys.stderr.isatty() else None
        with open(partial, "ab" if resumed else "wb") as out:
            next_report = time.monotonic()
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elif time.monotonic() >= next_report:
                    size = f" of {total / 2**20:.1f} MiB" if total else ""
                    log.info("downloading %s: %.1f MiB%s", name, done / 2**20, size)
                    next_report = time.monotonic() + 5.0
        if bar is not None:
            bar.close()


def _progress_bar(name: str, total: int | None, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def download(
    urls: Sequence[str],
    destination: Path,
    expected: str,
    *,
    algorithm: str = "md5",
    attempts: int = 3,
    timeout_s: float = 60.0,
) -> Path:
    """Download one file from the first mirror that works, verify its digest, then rename it into place.

    ``expected`` is the published hex digest or a prefix of it (torchvision names its weight files
    after the first 8 hex digits of their sha256). Nothing appears at ``destination`` unless the digest
    matched: the bytes go to ``*.part`` first, and an interrupted download resumes from there. A
    mismatch removes the partial file and raises ``InputError``. A download that fails removes the folders
    it created for ``destination`` while they are empty (an empty folder at a dataset's path must not pass
    for the dataset).
    """
    if len(expected) < 8:
        raise ValueError(f"an expected digest needs at least 8 hex digits, not {expected!r}")
    created = [folder for folder in (destination.parent, *destination.parent.parents) if not folder.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _download_into(urls, destination, expected, algorithm, attempts, timeout_s)
    except InputError:
        for folder in created:  # deepest first: a failed download leaves no empty folders behind
            try:
                folder.rmdir()  # refuses a folder that is not empty: a partial file to resume from, say
            except OSError:
                break
        raise


def _download_into(
    urls: Sequence[str], destination: Path, expected: str, algorithm: str, attempts: int, timeout_s: float
) -> Path:
    partial = destination.with_name(destination.name + ".part")
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, attempts + 1):
            try:
                _fetch(url, partial, timeout_s=timeout_s)
                break
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                errors.append(f"{url}: {error}")
                log.warning("download of %s failed (attempt %d of %d): %s", url, attempt, attempts, error)
                time.sleep(min(2.0**attempt, 10.0) if attempt < attempts else 0)
        else:
            continue
        actual = file_digest(partial, algorithm)
        if not actual.startswith(expected):
            partial.unlink(missing_ok=True)
            raise InputError(
                f"{url}: {algorithm} {actual} does not match the published {expected}; the download was discarded"
            )
        os.replace(partial, destination)
        return destination
    reason = errors[-1] if errors else "no mirror given"
    raise InputError(f"could not download {destination.name} ({reason}); put the official file at {destination}")
