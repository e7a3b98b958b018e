import os
import socket
import subprocess
import sys
import time

import httpx2
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """Start `alexnet serve SOURCE` on a free loopback port; yields (base URL, process); stops it after."""
    started = []

    def start(source, *extra):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "serve", str(source), "--port", str(port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url, process
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer in 60 s"
            time.sleep(0.2)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)
