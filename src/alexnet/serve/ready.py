"""Waiting for a started ``alexnet serve`` to answer: for scripts, benchmarks and tests that start the server
as a process. Standard library only, so it needs neither the ``serve`` extra nor an HTTP client."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request


class NotUp(RuntimeError):
    """The server stopped, or did not answer ``/healthz`` in time."""


def wait_until_up(url: str, process: subprocess.Popen | None = None, seconds: float = 60.0) -> None:
    """Return once ``GET {url}/healthz`` answers 200; ``NotUp`` with one line if ``process`` (the server, when
    given) exits first or nothing answers within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise NotUp(f"the server exited with status {process.returncode} before answering {url}/healthz")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # not listening yet, or an error status
            pass
        if time.monotonic() >= deadline:
            raise NotUp(f"{url}/healthz did not answer 200 within {seconds:g} s")
        time.sleep(0.2)
