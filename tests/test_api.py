"""The REST API, against the real server: ``python -m deepfake serve`` in its own process group."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import pytest
from PIL import Image
from provenance_samples import LEAKED_COORDINATES, signed_ai_photo_with_gps, signer_keys

from deepfake import ImageDeepfakeDetector
from deepfake.errors import ModelNotFoundError
from deepfake.interfaces.api import (
    ApiSettings,
    RateLimiter,
    create_app,
    hash_key,
    load_key_hashes,
    match_key,
    parse_keys,
)
from deepfake.interfaces.cli import EXIT_UNUSABLE, main
from deepfake.provenance import ProvenanceSettings

ROOT = Path(__file__).resolve().parent.parent
KEYS = {name: f"test-{name}-key" for name in ("a", "b", "limited", "other", "concurrent", "hashed", "slow")}
PATH_KEYS = {"heatmap_overlay_path", "annotated_video_path"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], keys_env: str, log: Path) -> Server:
    port = _free_port()
    env = {**os.environ, "DEEPFAKE_API_KEYS": keys_env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deepfake", "serve", "--port", str(port), *args],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", process, log)


def _wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited ({server.process.returncode}):\n{server.log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server did not answer /v1/health:\n{server.log.read_text()[-3000:]}")


def _stop(server: Server) -> None:
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def servers(random_checkpoint, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Two servers, started side by side: the main one, and one whose video timeout is tiny and
    whose rate limit refills too slowly (one request a minute) to race a test of it."""
    folder = tmp_path_factory.mktemp("api")
    keys_file = folder / "keys.txt"
    keys_file.write_text(f"# hashed, so the file holds no secret\nsha256:{hash_key(KEYS['hashed'])}\n")
    slow_keys = folder / "slow-keys.txt"
    slow_keys.write_text("".join(KEYS[k] + "\n" for k in ("slow", "limited", "other")))
    plain = ",".join(KEYS[k] for k in ("a", "b", "concurrent"))
    model = ["--model", str(random_checkpoint)]
    started = [
        _start([*model, "--keys-file", str(keys_file), "--rate", "0.5", "--burst", "25", "--max-upload-mb", "1", "--key-queue", "24",
                "--data-dir", str(folder / "main-data")], plain, folder / "main.log"),
        _start([*model, "--keys-file", str(slow_keys), "--video-timeout", "0.001", "--rate", "0.015", "--burst", "10",
                "--data-dir", str(folder / "slow")],
               "", folder / "slow.log"),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        for server in started:
            _wait_ready(server, deadline)
        yield SimpleNamespace(main=started[0].url, slow=started[1].url, tmp=folder)
    finally:
        for server in started:
            _stop(server)


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """An error is JSON {error, detail} and shows nothing of the server's insides."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    for leak in ("Traceback", 'File "', "site-packages", "/tmp", "deepfake-api-", str(ROOT)):
        assert leak not in response.text, response.text
    return body


def assert_no_paths(value) -> None:
    if isinstance(value, dict):
        assert not PATH_KEYS & set(value), sorted(value)
        for item in value.values():
            assert_no_paths(item)
    elif isinstance(value, list):
        for item in value:
            assert_no_paths(item)
    elif isinstance(value, str):
        assert not re.search(r"(^|\s)/(tmp|home|root|work|usr|var)/", value), value


def upload(data: bytes, name: str, **fields) -> dict:
    return {"files": {"file": (name, data)}, "data": {k: str(v) for k, v in fields.items()}}


# --- the server ---------------------------------------------------------------------------------


def test_health_and_docs_need_no_key(servers):
    health = httpx.get(servers.main + "/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    docs = httpx.get(servers.main + "/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    spec = httpx.get(servers.main + "/openapi.json").json()
    assert {"/v1/detect/image", "/v1/detect/video", "/v1/results/{result_id}/heatmap.png"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/detect/image"]["post"]["requestBody"]["content"]
    assert any(s.get("name") == "X-API-Key" for s in spec["components"]["securitySchemes"].values())


def test_keys(servers):
    assert_error(httpx.get(servers.main + "/v1/model"), 401, "missing_api_key")
    assert_error(httpx.get(servers.main + "/v1/model", headers={"X-API-Key": "guess"}), 403, "invalid_api_key")
    assert_error(httpx.post(servers.main + "/v1/detect/image", headers={"X-API-Key": "x"}), 403, "invalid_api_key")
    model = httpx.get(servers.main + "/v1/model", headers=key("hashed"))  # from the keys file, stored as a hash
    assert model.status_code == 200
    info = model.json()
    assert (
        info["version"] == "test" and info["threshold"] == pytest.approx(0.6) and info["arch"] == "efficientnet_lite0"
    )
    assert isinstance(info["metrics"], dict)
    # Keys from the environment and from the file are both taken; another server's key is not.
    assert httpx.get(servers.main + "/v1/model", headers=key("b")).status_code == 200
    assert_error(httpx.get(servers.main + "/v1/model", headers=key("slow")), 403, "invalid_api_key")


def test_detect_image_heatmap_and_result(servers, engine, hopper_jpeg_bytes):
    response = httpx.post(servers.main + "/v1/detect/image", headers=key("a"), timeout=60,
                          **upload(hopper_jpeg_bytes, "C:\\Users\\me\\hopper.jpg", threshold=0.3))  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    expected = ImageDeepfakeDetector(engine=engine).detect(hopper_jpeg_bytes, name="hopper.jpg", threshold=0.3)
    assert set(body) == (set(expected.to_dict()) - PATH_KEYS) | {"id", "heatmap_url"}
    assert body["source"] == "hopper.jpg"  # the client's folders are not echoed
    assert body["fake_probability"] == pytest.approx(expected.fake_probability, abs=1e-5)
    assert body["threshold"] == 0.3 and body["verdict"] == expected.verdict and body["face_count"] == 1
    assert body["sha256"] == expected.sha256
    assert_no_paths(body)

    png = httpx.get(servers.main + body["heatmap_url"], headers=key("a"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert httpx.get(f"{servers.main}/v1/results/{body['id']}", headers=key("a")).json() == body
    # Results belong to the key that made them; to anyone else they do not exist.
    assert_error(httpx.get(servers.main + body["heatmap_url"], headers=key("b")), 404, "result_not_found")
    assert_error(httpx.get(servers.main + "/v1/results/nope/heatmap.png", headers=key("a")), 404, "result_not_found")
    assert_error(httpx.get(servers.main + body["heatmap_url"]), 401, "missing_api_key")

    plain = httpx.post(servers.main + "/v1/detect/image", headers=key("a"), timeout=60,
                       **upload(hopper_jpeg_bytes, "h.jpg", explain="false"))  # fmt: skip
    assert plain.status_code == 200 and plain.json()["heatmap_url"] is None
    assert_error(httpx.get(f"{servers.main}/v1/results/{plain.json()['id']}/heatmap.png", headers=key("a")),
                 404, "no_heatmap")  # fmt: skip


def test_health_answers_while_a_video_is_analysed(servers, synthetic_clip):
    finished: dict = {}

    def analyse() -> None:
        finished["response"] = httpx.post(servers.main + "/v1/detect/video", headers=key("a"), timeout=120,
                                          **upload(synthetic_clip, "clip.mp4", num_frames=20))  # fmt: skip
        finished["at"] = time.monotonic()

    worker = threading.Thread(target=analyse)
    worker.start()
    answered = []
    while worker.is_alive():
        started = time.monotonic()
        assert httpx.get(servers.main + "/v1/health", timeout=5).status_code == 200
        answered.append((time.monotonic(), time.monotonic() - started))
        time.sleep(0.05)
    worker.join()
    during = [latency for at, latency in answered if at < finished["at"]]
    assert len(during) >= 3, "the health check did not answer while the video was analysed"
    assert max(during) < 2.0  # generous: a blocked event loop would wait for the whole analysis

    response = finished["response"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media_type"] == "video" and body["frames_analyzed"] == 20 and len(body["timeline"]) == 20
    assert body["aggregation"]["rule"] in ("mean", "confident_run")
    assert_no_paths(body)
    assert httpx.get(servers.main + body["heatmap_url"], headers=key("a")).content.startswith(b"\x89PNG")


def test_bad_uploads(servers, hopper_jpeg_bytes, synthetic_clip):
    url, headers = servers.main + "/v1/detect/image", key("b")

    def post(path: str = "/v1/detect/image", **kwargs) -> httpx.Response:
        kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
        return httpx.post(servers.main + path, timeout=60, **kwargs)

    assert_error(post(**upload(hopper_jpeg_bytes + bytes(1_200_000), "big.jpg")), 413, "too_large")
    assert_error(post(**upload(b"just some text\n", "notes.jpg")), 415, "not_media")
    assert_error(post(**upload(synthetic_clip, "clip.mp4")), 415, "wrong_media_kind")
    assert_error(post("/v1/detect/video", **upload(hopper_jpeg_bytes, "h.jpg")), 415, "wrong_media_kind")
    assert_error(post(content=hopper_jpeg_bytes, headers={"Content-Type": "image/jpeg"}), 415, "unsupported_media_type")
    corrupt = assert_error(post(**upload(hopper_jpeg_bytes[:3000], "cut.jpg")), 422, "corrupt_file")
    assert "'cut.jpg' is truncated or corrupt" in corrupt["detail"]  # the engine's own message
    assert_error(post(**upload(b"", "empty.jpg")), 422, "empty_file")
    icon = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(icon, "PNG")
    assert_error(post(**upload(icon.getvalue(), "icon.png")), 422, "image_too_small")
    assert_error(post(data={"threshold": "0.5"}, files={"other": ("x", b"x")}), 422, "missing_file")
    assert_error(post(**upload(hopper_jpeg_bytes, "h.jpg", threshold="high")), 422, "invalid_option")
    assert_error(post("/v1/detect/video", **upload(synthetic_clip, "c.mp4", num_frames=0)), 422, "invalid_option")
    assert_error(httpx.get(url, headers=headers), 405, "method_not_allowed")
    assert_error(httpx.get(servers.main + "/v1/nothing", headers=headers), 404, "not_found")


def test_size_limit_holds_without_content_length(servers, hopper_jpeg_bytes):
    """A chunked upload has no length to check up front: it is cut off while being read."""
    boundary = "limit-test-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip

    def body() -> Iterator[bytes]:
        yield head + hopper_jpeg_bytes
        for _ in range(24):  # 1.5 MiB of padding in 64 KiB chunks
            yield bytes(65536)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(servers.main + "/v1/detect/image", content=body(), timeout=60,
                          headers={**key("b"), "Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    assert_error(response, 413, "too_large")


def test_video_timeout(servers, synthetic_clip):
    response = httpx.post(servers.slow + "/v1/detect/video", headers=key("slow"), timeout=60,
                          **upload(synthetic_clip, "clip.mp4", num_frames=4))  # fmt: skip
    assert "took over" in assert_error(response, 504, "timeout")["detail"]
    assert httpx.get(servers.slow + "/v1/health").status_code == 200


def test_twenty_concurrent_requests(servers, engine, hopper_jpeg_bytes, astronaut_rgb):
    ok, png = cv2.imencode(".png", cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR))
    pictures = [hopper_jpeg_bytes, png.tobytes()]
    detector = ImageDeepfakeDetector(engine=engine)
    expected = [detector.detect(p, explain=False).fake_probability for p in pictures]

    def send(i: int) -> httpx.Response:
        return httpx.post(servers.main + "/v1/detect/image", headers=key("concurrent"), timeout=120,
                          **upload(pictures[i % 2], f"picture-{i:02d}.img"))  # fmt: skip

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(send, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    for i, response in enumerate(responses):
        body = response.json()
        assert body["source"] == f"picture-{i:02d}.img"  # each answer belongs to its own request
        assert body["fake_probability"] == pytest.approx(expected[i % 2], abs=1e-5)
    assert len({r.json()["id"] for r in responses}) == 20


def test_rate_limit_is_per_key(servers):
    # The slow server refills a token every 67 s: a burst of 10, then refusals, whatever the
    # machine's speed (at 0.5/s a loaded CI machine refilled a token between two requests).
    statuses = []
    for _ in range(15):
        response = httpx.get(servers.slow + "/v1/model", headers=key("limited"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses == [200] * 10 + [429], statuses
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert httpx.get(servers.slow + "/v1/model", headers=key("other")).status_code == 200
    assert httpx.get(servers.slow + "/v1/model", headers=key("limited")).status_code == 429


# --- pieces, in process -------------------------------------------------------------------------


def test_token_bucket():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("j") == 0.0  # every key has its own bucket
    now[0] = 0.5
    assert limiter.take("k") == 0.0
    now[0] = 100.0  # refills up to the burst, no further
    assert [limiter.take("k") for _ in range(4)][-1] > 0
    assert RateLimiter(rate=0, burst=1).take("k") == 0.0  # rate 0: no limit


def test_key_parsing(tmp_path):
    hashes = parse_keys(["alpha", " ", "# comment", f"sha256:{hash_key('beta').upper()}"])
    assert hashes == {hash_key("alpha"), hash_key("beta")}
    assert match_key(frozenset(hashes), "beta") == hash_key("beta") and match_key(frozenset(hashes), "gamma") is None
    with pytest.raises(ValueError, match="64 hex"):
        parse_keys(["sha256:abc"])
    keys_file = tmp_path / "keys"
    keys_file.write_text("one\ntwo\n")
    assert load_key_hashes(keys_file, env="three,") == {hash_key(k) for k in ("one", "two", "three")}
    with pytest.raises(ValueError, match="No API keys"):
        ApiSettings(key_hashes=load_key_hashes(None, env=""))


class _BrokenEngine:
    """Fails inside an analysis with messages that name server paths."""

    model = SimpleNamespace(threshold=0.6, name="stub", version="0")
    face_detector = SimpleNamespace(max_side=640)  # the image detector sizes its decode by it
    cam_available = False

    def __init__(self, error: Exception) -> None:
        self.error = error

    def faces_for(self, images):
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RuntimeError("CUDA failure in /opt/secret/kernel.cu"), 500, "internal_error"),
        (ModelNotFoundError("Model file not found: /srv/secret/model.pth"), 503, "model_not_found"),
    ],
)
def test_unexpected_failures_reveal_nothing(error, status, code, hopper_jpeg_bytes):
    settings = ApiSettings(key_hashes=frozenset({hash_key("k")}))
    app = create_app(settings, engine_factory=lambda: _BrokenEngine(error))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            return await client.post(
                "/v1/detect/image", headers={"X-API-Key": "k"}, files={"file": ("h.jpg", hopper_jpeg_bytes)}
            )

    response = asyncio.run(call())
    assert response.status_code == status
    assert response.json()["error"] == code and "secret" not in response.text


# --- evidence -----------------------------------------------------------------------------------


def _detect_in_process(engine, settings: ApiSettings, data: bytes) -> httpx.Response:
    app = create_app(settings, engine_factory=lambda: engine)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v1/detect/image", headers={"X-API-Key": "k"}, timeout=60,
                                     **upload(data, "generated.jpg", explain="false", threshold=1.0))  # fmt: skip

    return asyncio.run(call())


def test_evidence_in_the_response_and_no_coordinates_unless_asked(engine, hopper_jpeg_bytes, tmp_path):
    data = signed_ai_photo_with_gps(hopper_jpeg_bytes)
    keys = frozenset({hash_key("k")})
    response = _detect_in_process(engine, ApiSettings(key_hashes=keys), data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] == "FAKE" and body["model_classification"] == "REAL"  # threshold 1: the model says REAL
    assert "trainedAlgorithmicMedia" in body["decided_by"]
    codes = [f["code"] for f in body["evidence"]]
    assert codes[:2] == ["model.score", "c2pa.ai_generated"] and "metadata.location" in codes
    assert any("not in your trust list" in f["summary"] for f in body["evidence"])
    assert not any(c in response.text for c in LEAKED_COORDINATES)

    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signer_keys().ca_pem)
    provenance = ProvenanceSettings.load(anchors, include_location=True)
    asked = _detect_in_process(engine, ApiSettings(key_hashes=keys, provenance=provenance), data).json()
    assert "c2pa.trusted" in [f["code"] for f in asked["evidence"]]
    assert LEAKED_COORDINATES[0] in json.dumps(asked["evidence"])


def test_serve_refuses_a_bad_trust_anchors_file(tmp_path, capsys):
    bad = tmp_path / "anchors.pem"
    bad.write_text("no certificate here")
    env = {"DEEPFAKE_API_KEYS": "k"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["serve", "--trust-anchors", str(bad), "--model", str(tmp_path / "unused.pth")]) == EXIT_UNUSABLE
    assert "holds no PEM certificate" in capsys.readouterr().err

