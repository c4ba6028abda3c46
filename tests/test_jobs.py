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

from deepfake.interfaces.api import ApiSettings, ByteBudget, create_app, hash_key
from deepfake.interfaces.jobs import Job, JobStore, Retention

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
    face_detector = SimpleNamespace(max_side=640)  # the image detector sizes its decode by it
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


def test_large_uploads_take_turns_within_the_analysis_budget():
    """Regression: four 150 MiB uploads analysed at once took the server to base + 2.2 GB (reading
    content credentials copies a file several times); the byte budget makes large files take turns."""
    budget = ByteBudget(300)
    started: list[str] = []
    done = {name: asyncio.Event() for name in ("a", "b", "c", "huge", "small")}

    async def analysis(name: str, size: int) -> None:
        async with budget.held(size):
            started.append(name)
            await done[name].wait()

    async def settle() -> None:  # every task that can go on has gone on
        await asyncio.sleep(0.05)

    async def scenario() -> None:
        tasks = [asyncio.create_task(analysis(name, size)) for name, size in (("a", 150), ("b", 150), ("c", 150),
                                                                               ("huge", 500))]  # fmt: skip
        await settle()
        assert started == ["a", "b"] and budget.used == 300  # the third large file waits for a turn
        done["a"].set()
        await settle()
        assert started == ["a", "b", "c"]
        done["b"].set()
        done["c"].set()
        await settle()
        assert started[-1] == "huge" and budget.used == 500  # over the budget: alone
        tasks.append(asyncio.create_task(analysis("small", 1)))
        await settle()
        assert "small" not in started
        done["huge"].set()
        await settle()
        assert started[-1] == "small"
        done["small"].set()
        await asyncio.gather(*tasks)
        assert budget.used == 0

    asyncio.run(scenario())


def test_media_types_are_case_insensitive(server, hopper_jpeg_bytes):
    request = httpx.Request("POST", server.server.url + "/v1/detect/image", headers=key("a"),
                            files={"file": ("h.jpg", hopper_jpeg_bytes)})  # fmt: skip
    boundary = request.headers["Content-Type"].split("boundary=")[1]
    response = httpx.post(server.server.url + "/v1/detect/image", content=request.read(), timeout=60,
                          headers={**key("a"), "Content-Type": f"MULTIPART/FORM-DATA; boundary={boundary}"})  # fmt: skip
    assert response.status_code == 200, response.text


def test_a_video_result_serves_every_heatmap_it_keeps(server, synthetic_clip):
    """Regression: three frame overlays were kept per video result but only one could be fetched."""
    url = server.server.url
    response = httpx.post(url + "/v1/detect/video", headers=key("b"), timeout=120,
                          **upload(synthetic_clip, "clip.mp4", num_frames=8))  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    frame_urls = {f["index"]: f["heatmap_url"] for f in body["timeline"] if f["heatmap_url"]}
    assert sorted(frame_urls) == sorted(body["suspicious_frames"]) and len(frame_urls) == 3
    assert all(f["heatmap_url"] is None for f in body["timeline"] if f["index"] not in frame_urls)
    fetched = {}
    for index, frame_url in frame_urls.items():
        assert frame_url == f"/v1/results/{body['id']}/frames/{index}/heatmap.png"
        png = httpx.get(url + frame_url, headers=key("b"))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png", png.text
        fetched[index] = png.content
    # The video's heatmap is its most suspicious frame's; nothing else is kept (not the upload).
    assert httpx.get(url + body["heatmap_url"], headers=key("b")).content == fetched[body["suspicious_frames"][0]]
    kept = sorted(p.read_bytes() for p in (server.data / "jobs" / body["id"]).iterdir())
    assert kept == sorted(fetched.values())
    # Another key, and a frame without a heatmap, get nothing.
    assert_error(httpx.get(url + frame_urls[body["suspicious_frames"][0]], headers=key("a")), 404, "result_not_found")
    plain = next(f["index"] for f in body["timeline"] if f["index"] not in frame_urls)
    assert_error(httpx.get(f"{url}/v1/results/{body['id']}/frames/{plain}/heatmap.png", headers=key("b")),
                 404, "no_heatmap")  # fmt: skip
    spec = httpx.get(url + "/openapi.json").json()["paths"]
    assert "image/png" in spec["/v1/results/{result_id}/frames/{frame_index}/heatmap.png"]["get"]["responses"]["200"]["content"]


def test_retention_deletes_every_kept_heatmap(tmp_path):
    """A finished job keeps the heatmaps its result serves, counts all their bytes, and expiry removes them all."""
    now = [1000.0]
    store = JobStore(tmp_path, Retention(ttl_s=60, max_items=10, max_bytes=10_000), clock=lambda: now[0])
    folders = []
    for job_id in ("old", "new"):
        store.add(Job(job_id, "owner", "video", "clip.mp4", {}, "queued", now[0], now[0]))
        folder = store.folder(job_id)
        folder.mkdir()
        store.upload_path(job_id).write_bytes(b"upload")
        frames = [folder / f"frame{i:06d}.png" for i in (3, 7, 12)]
        for path in frames:
            path.write_bytes(b"png" * 1000)
        (folder / "frame000001.png").write_bytes(b"an overlay the result does not name")
        assert store.finish(job_id, "done", result={}, overlay=frames[1], served=frames)
        assert sorted(p.name for p in folder.iterdir()) == [p.name for p in frames]  # the upload and the stray went
        job = store.get(job_id)
        assert job.overlay == frames[1].name and job.bytes == 9000
        folders.append(folder)
        now[0] += 30
    assert store.expire() == 1  # 18,000 bytes kept in all: over the limit, so the older job goes, every file of it
    assert not folders[0].exists() and len(list(folders[1].iterdir())) == 3
    now[0] += 60
    assert store.expire() == 1 and not folders[1].exists()  # and by age
    store.close()


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
