import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alexnet.serve.ready import NotUp, wait_until_up


@pytest.fixture
def healthz():
    """A loopback server whose /healthz answers 503 to its first two requests, then 200; yields (URL, seen)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200 if len(seen) > 2 else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_returns_once_healthz_answers_200(healthz):
    url, seen = healthz
    wait_until_up(url, seconds=10)
    assert seen == ["/healthz"] * 3


def test_a_server_that_exited_is_named_with_its_status(unused_port):
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(NotUp, match="exited with status 3"):
        wait_until_up(f"http://127.0.0.1:{unused_port}", process)


def test_silence_times_out_with_one_line(unused_port):
    url = f"http://127.0.0.1:{unused_port}"
    with pytest.raises(NotUp, match=rf"^{url}/healthz did not answer 200 within 0.5 s$"):
        wait_until_up(url, seconds=0.5)
