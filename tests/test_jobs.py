"""Jobs, admission control, persistence and offline docs, against the real server (``python -m deepfake serve``).

One server with a single worker, so that a long video holds it and everything else queues."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import face_frames, make_clip
from test_api import Server, _start, _stop, _wait_ready, assert_error, upload

from deepfake.interfaces.api import ApiSettings, create_app, hash_key

KEYS = {"a": "jobs-key-a", "b": "jobs-key-b"}
LONG_FRAMES = 256  # the most a request may ask for: keeps the single worker busy for many seconds


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def _args(checkpoint: Path, data: Path) -> list[str]:
    return ["--model", str(checkpoint), "--workers", "1", "--queue-size", "6", "--key-queue", "3",
            "--rate", "0", "--data-dir", str(data)]  # fmt: skip


@pytest.fixture(scope="module")
def long_clip(hopper_rgb) -> bytes:
    frames = face_frames(hopper_rgb)  # the face moves across; back and forth for a long clip
    return make_clip([frames[i % len(frames)] for i in range(LONG_FRAMES)], fps=10)


@pytest.fixture(scope="module")
def server(random_checkpoint, tmp_path_factory) -> Iterator[SimpleNamespace]:
    folder = tmp_path_factory.mktemp("jobs")
    state = SimpleNamespace(folder=folder, data=folder / "data", checkpoint=random_checkpoint, server=None)
    state.server = _start(_args(random_checkpoint, state.data), ",".join(KEYS.values()), folder / "server.log")
    try:
        _wait_ready(state.server, time.monotonic() + 90)
        yield state
    finally:
        _stop(state.server)


def _rss_mib(server: Server) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _job(url: str, job_id: str, who: str = "a") -> dict:
    response = httpx.get(f"{url}/v1/jobs/{job_id}", headers=key(who))
    assert response.status_code == 200, response.text
    return response.json()


def _busy(url: str) -> int:
    return httpx.get(url + "/v1/health").json()["jobs_waiting_or_running"]


def _start_long_job(url: str, clip: bytes) -> str:
    response = httpx.post(url + "/v1/jobs", headers=key("a"), timeout=60,
                          **upload(clip, "long.mp4", num_frames=LONG_FRAMES))  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    job_id = response.json()["id"]
    _wait_for(lambda: _job(url, job_id)["status"] == "running", 60, "the long job to start")
    return job_id


def test_a_job_reports_progress_and_gives_the_synchronous_result(server, hopper_jpeg_bytes):
    url = server.server.url
    sync = httpx.post(url + "/v1/detect/image", headers=key("a"), timeout=60, **upload(hopper_jpeg_bytes, "h.jpg"))
    assert sync.status_code == 200, sync.text
    queued = httpx.post(url + "/v1/jobs", headers=key("a"), timeout=60, **upload(hopper_jpeg_bytes, "h.jpg"))
    assert queued.status_code == 202 and queued.json()["status"] in ("queued", "running") and queued.json()["kind"] == "image"
    done = _wait_for(lambda: (j := _job(url, queued.json()["id"]))["status"] == "done" and j, 60, "the job")
    assert done["progress"] == {"fraction": 1.0, "stage": "Done"} and done["error"] is None
    result = done["result"]
    assert result["fake_probability"] == pytest.approx(sync.json()["fake_probability"], abs=1e-6)
    assert set(result) == set(sync.json()) and result["id"] == done["id"]
    assert httpx.get(url + result["heatmap_url"], headers=key("a")).content.startswith(b"\x89PNG")
    # Another key's job does not exist for this one; a finished job cannot be cancelled.
    assert_error(httpx.get(f"{url}/v1/jobs/{done['id']}", headers=key("b")), 404, "job_not_found")
    assert_error(httpx.delete(f"{url}/v1/jobs/{done['id']}", headers=key("a")), 409, "job_finished")
    server.earlier = result  # served again after the restart below


def test_cancelling_a_running_job_frees_the_worker_at_once(server, long_clip, hopper_jpeg_bytes):
    """Regression: an abandoned analysis kept running and kept its worker (the next request waited 22 s)."""
    url = server.server.url
    job_id = _start_long_job(url, long_clip)
    _wait_for(lambda: _job(url, job_id)["progress"]["fraction"] > 0, 60, "progress")
    cancelled = httpx.delete(f"{url}/v1/jobs/{job_id}", headers=key("a"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    began = time.monotonic()
    _wait_for(lambda: _busy(url) == 0, 30, "the worker to be freed")
    freed_in = time.monotonic() - began
    image = httpx.post(url + "/v1/detect/image", headers=key("a"), timeout=60, **upload(hopper_jpeg_bytes, "h.jpg"))
    assert image.status_code == 200, image.text
    assert freed_in < 10, f"the worker was freed only after {freed_in:.1f} s"
    assert _job(url, job_id)["status"] == "cancelled"  # and stays so, though the thread ended afterwards


class _BlockingEngine:
    """Holds the only worker inside an analysis until released, with flat memory."""

    model = SimpleNamespace(threshold=0.6, name="stub", version="0")
    cam_available = False

    def __init__(self) -> None:
        self.release = threading.Event()

    def faces_for(self, images):
        self.release.wait(60)
        raise RuntimeError("released")


def test_full_queues_answer_503_and_waiting_uploads_are_not_held_in_memory(hopper_jpeg_bytes, tmp_path):
    """Regression: eight queued 150 MiB uploads added 1.9 GB to the server, waiting for one worker.
    In process, so tracemalloc sees every Python allocation of the server's while uploads wait."""
    engine = _BlockingEngine()
    settings = ApiSettings(key_hashes=frozenset({hash_key(KEYS["a"]), hash_key(KEYS["b"])}), workers=1,
                           queue_size=6, key_queue=3, rate=0, data_dir=tmp_path)  # fmt: skip
    app = create_app(settings, engine_factory=lambda: engine)
    padded = hopper_jpeg_bytes + bytes(40 * 2**20)  # a valid JPEG with 40 MiB after its end

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def post(who: str, data: bytes) -> httpx.Response:
                return await c.post("/v1/jobs", headers=key(who), timeout=60, **upload(data, "padded.jpg"))

            assert (await post("a", hopper_jpeg_bytes)).status_code == 202  # takes the worker and holds it
            tracemalloc.start()
            queued = []
            refusals = []
            for who in ("a", "a", "a", "b", "b", "b", "b"):  # 3 a key, 6 on the server, the running one counted
                response = await post(who, padded)
                if response.status_code == 503:
                    refusals.append(response)
                    continue
                assert response.status_code == 202, response.text
                queued.append(response.json()["id"])
            held, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert held < 20 * 2**20, f"{held / 2**20:.0f} MiB still held with 5 x 40 MiB uploads queued"
            assert all((tmp_path / "jobs" / job_id / "upload").stat().st_size == len(padded) for job_id in queued)
            for refused, whose in zip(refusals, ("This key's queue", "The server's queue"), strict=True):
                assert whose in assert_error(refused, 503, "queue_full")["detail"]
                assert int(refused.headers["Retry-After"]) >= 1
            for job_id, who in zip(queued, ("a", "a", "b", "b", "b")):
                assert (await c.delete(f"/v1/jobs/{job_id}", headers=key(who))).json()["status"] == "cancelled"
                assert not (tmp_path / "jobs" / job_id).exists()  # a cancelled job leaves no files
            engine.release.set()

    asyncio.run(scenario())


def test_media_types_are_case_insensitive(server, hopper_jpeg_bytes):
    request = httpx.Request("POST", server.server.url + "/v1/detect/image", headers=key("a"),
                            files={"file": ("h.jpg", hopper_jpeg_bytes)})  # fmt: skip
    boundary = request.headers["Content-Type"].split("boundary=")[1]
    response = httpx.post(server.server.url + "/v1/detect/image", content=request.read(), timeout=60,
                          headers={**key("a"), "Content-Type": f"MULTIPART/FORM-DATA; boundary={boundary}"})  # fmt: skip
    assert response.status_code == 200, response.text


def test_video_results_keep_only_the_heatmap_they_serve(server, synthetic_clip):
    response = httpx.post(server.server.url + "/v1/detect/video", headers=key("b"), timeout=120,
                          **upload(synthetic_clip, "clip.mp4", num_frames=8))  # fmt: skip
    assert response.status_code == 200, response.text
    kept = list((server.data / "jobs" / response.json()["id"]).iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".png"  # not the upload, not the other frames' overlays


def test_docs_load_without_the_network(server):
    page = httpx.get(server.server.url + "/docs")
    assert page.status_code == 200
    assert not re.search(r"https?://", page.text), "the docs page names an external host"
    for asset in re.findall(r'(?:href|src)="(/[^"]+)"', page.text):
        assert httpx.get(server.server.url + asset).status_code == 200, asset
    redoc = httpx.get(server.server.url + "/redoc").text
    assert not re.search(r"https?://", redoc) and httpx.get(server.server.url + "/docs-assets/redoc.standalone.js").status_code == 200


@pytest.mark.browser
def test_docs_render_in_a_browser_with_the_network_off(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    outside = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()

        def only_local(route) -> None:
            if route.request.url.startswith(server.server.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto(server.server.url + "/docs")
        page.get_by_text("/v1/jobs", exact=True).first.wait_for(timeout=30_000)  # Swagger UI drew the routes
        browser.close()
    assert not outside, outside


def test_a_killed_server_resumes_its_jobs_and_keeps_its_results(server, synthetic_clip):
    """SIGKILL mid-job, start again on the same data folder: the job completes, earlier results are still served."""
    url = server.server.url
    response = httpx.post(url + "/v1/jobs", headers=key("b"), timeout=60,
                          **upload(synthetic_clip, "resumed.mp4", num_frames=20))  # fmt: skip
    job_id = response.json()["id"]
    _wait_for(lambda: _job(url, job_id, "b")["status"] == "running", 60, "the job to start")
    server.server.process.send_signal(signal.SIGKILL)
    server.server.process.wait()
    server.server = _start(_args(server.checkpoint, server.data), ",".join(KEYS.values()), server.folder / "again.log")
    _wait_ready(server.server, time.monotonic() + 90)
    url = server.server.url
    done = _wait_for(lambda: (j := _job(url, job_id, "b"))["status"] in ("done", "failed") and j, 120, "the job")
    assert done["status"] == "done" and done["result"]["frames_analyzed"] == 20, done
    earlier = getattr(server, "earlier", None)
    if earlier is not None:
        assert httpx.get(f"{url}/v1/results/{earlier['id']}", headers=key("a")).json() == earlier
        assert httpx.get(url + earlier["heatmap_url"], headers=key("a")).content.startswith(b"\x89PNG")
