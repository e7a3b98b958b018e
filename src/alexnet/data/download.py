"""Fetch official dataset files, verify their checksums, and move them into place atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from alexnet.errors import InputError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, partial: Path, *, timeout_s: float) -> None:
    # Resumes a partial file with an HTTP Range request; a server that ignores Range restarts it.
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        resumed = have and getattr(response, "status", 200) == 206
        total = response.headers.get("Content-Length")
        with open(partial, "ab" if resumed else "wb") as out:
            done = have if resumed else 0
            next_report = time.monotonic()
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if time.monotonic() >= next_report:
                    size = f" of {(int(total) + (have if resumed else 0)) / 2**20:.1f} MiB" if total else ""
                    log.info("downloading %s: %.1f MiB%s", partial.name.removesuffix(".part"), done / 2**20, size)
                    next_report = time.monotonic() + 2.0


def download(urls: Sequence[str], destination: Path, md5: str, *, attempts: int = 3, timeout_s: float = 60.0) -> Path:
    """Download one file from the first mirror that works, verify its md5, then rename it into place.

    Nothing appears at ``destination`` unless its checksum matched: the bytes go to ``*.part`` first.
    A checksum mismatch removes the partial file and raises ``InputError``.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
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
        actual = file_md5(partial)
        if actual != md5:
            partial.unlink(missing_ok=True)
            raise InputError(f"{url}: md5 {actual} does not match the published {md5}; the download was discarded")
        os.replace(partial, destination)
        return destination
    reason = errors[-1] if errors else "no mirror given"
    raise InputError(f"could not download {destination.name} ({reason}); put the official file at {destination}")
