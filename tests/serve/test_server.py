"""The real server: a headless Chromium drives the page, and a bounded load on loopback."""

import asyncio
import shutil
import time

import httpx2
import numpy as np
import pytest
from PIL import Image

from modeldirs import write_model_dir

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As this machine's probe starts it: no sandbox as root, and nothing that calls the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_the_page_shows_the_predicted_class_of_an_uploaded_image(tmp_path, server):
    from playwright.sync_api import sync_playwright

    url, _ = server(write_model_dir(tmp_path / "model"))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    expected = httpx2.post(f"{url}/predict", content=photo.read_bytes(), headers={"Content-Type": "image/png"}).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('about').textContent.includes('alexnet_cifar')")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#top .row .class-name")
        shown = page.locator("#top .class-name").all_inner_texts()
        page.wait_for_function("document.getElementById('gradcam').naturalWidth > 0")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert shown == [t["class"] for t in expected["top"]] and shown[0] == "7"
    assert (tmp_path / "page.png").stat().st_size > 10_000


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


async def _load(url: str, body: bytes, requests: int, concurrency: int) -> tuple[list[float], list[int]]:
    latencies, statuses = [], []
    queue = asyncio.Queue()
    for _ in range(requests):
        queue.put_nowait(None)
    async with httpx2.AsyncClient(timeout=60) as client:

        async def worker():
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                answer = await client.post(f"{url}/predict", content=body, headers={"Content-Type": "image/png"})
                latencies.append(time.perf_counter() - start)
                statuses.append(answer.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


def test_500_requests_at_concurrency_16_without_errors_and_with_steady_memory(tmp_path, server):
    url, process = server(write_model_dir(tmp_path / "model"))
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(tmp_path / "p.png")
    body = (tmp_path / "p.png").read_bytes()
    asyncio.run(_load(url, body, 100, 16))  # warm-up: allocator pools, thread pools
    before = _rss_mib(process.pid)
    latencies, statuses = asyncio.run(_load(url, body, 500, 16))
    after = _rss_mib(process.pid)
    assert statuses == [200] * 500
    assert after - before < 50, (before, after)  # steady: no growth per request
    health = httpx2.get(f"{url}/healthz").json()
    assert health["requests"] == 600 and health["batches"] < 600  # requests were batched
