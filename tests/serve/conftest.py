import os
import socket
import subprocess
import sys

import pytest

from alexnet.serve.ready import NotUp, wait_until_up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


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
        try:
            wait_until_up(url, process)
        except NotUp as e:
            pytest.fail(f"{e}: {process.stdout.read() if process.poll() is not None else ''}")
        return url, process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)
