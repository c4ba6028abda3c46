"""REST API: ``python -m deepfake serve``. FastAPI app with API keys, a rate limit per key and upload limits.

Responses carry the same ``to_dict()`` schema as the dashboard's exports, plus ``id`` and
``heatmap_url``, with server file paths removed. Errors are ``{"error": code, "detail": message}``.
The model is loaded once at start-up; analyses run in worker threads, so the event loop (and
``/v1/health``) stays responsive while a video is being analysed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from deepfake import __version__
from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import DeepfakeError, InputError, ModelError, NotMediaError, UnsupportedFormatError
from deepfake.media import read_media
from deepfake.results import AnalysisResult
from deepfake.video import VideoDeepfakeDetector

log = logging.getLogger("deepfake.api")

API_KEY_HEADER = "X-API-Key"
KEYS_ENV = "DEEPFAKE_API_KEYS"
MAX_NUM_FRAMES = 256
MAX_NAME_LENGTH = 200
# Paths on the server are nobody else's business: these keys are dropped from every response.
PATH_KEYS = ("heatmap_overlay_path", "annotated_video_path")


@dataclass(frozen=True)
class ApiSettings:
    """Everything ``create_app`` needs besides the engine. Rates are per key."""

    key_hashes: frozenset[str]
    rate: float = 2.0  # requests per second refilled into each key's bucket; <= 0 turns the limit off
    burst: int = 30  # bucket size: requests a key may make at once
    max_upload_bytes: int = 200 * 2**20
    image_timeout_s: float = 60.0
    video_timeout_s: float = 300.0
    result_ttl_s: float = 3600.0
    max_results: int = 1000
    workers: int = 4  # analyses at once; more requests wait, so memory stays bounded

    def __post_init__(self) -> None:
        if not self.key_hashes:
            raise ValueError(f"No API keys: set {KEYS_ENV} (comma-separated) or pass --keys-file.")


# --- keys ---------------------------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(entries: Iterable[str]) -> set[str]:
    """Key hashes from entries that are plain keys or ``sha256:<hex digest>`` (so a keys file
    need not hold secrets). Blank entries and ``#`` comments are skipped."""
    hashes = set()
    for entry in (e.strip() for e in entries):
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("sha256:"):
            digest = entry.removeprefix("sha256:").strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("A 'sha256:' key entry must be followed by 64 hex digits.")
            hashes.add(digest)
        else:
            hashes.add(hash_key(entry))
    return hashes


def load_key_hashes(keys_file: str | Path | None = None, env: str | None = None) -> frozenset[str]:
    """Keys from a file (one a line) and from ``DEEPFAKE_API_KEYS`` (comma-separated), as hashes."""
    hashes = parse_keys((env if env is not None else os.environ.get(KEYS_ENV, "")).split(","))
    if keys_file is not None:
        hashes |= parse_keys(Path(keys_file).read_text().splitlines())
    return frozenset(hashes)


def match_key(key_hashes: frozenset[str], presented: str) -> str | None:
    """The stored hash the key matches, or None. Every entry is compared in constant time and
    none is skipped, so response timing says nothing about how close a guess was."""
    digest = hash_key(presented)
    found = None
    for stored in key_hashes:
        if hmac.compare_digest(stored, digest):
            found = stored
    return found


# --- rate limit ---------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend a token: 0.0 if there was one, else the seconds until there will be."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


# --- results ------------------------------------------------------------------------------------


@dataclass
class StoredResult:
    owner: str
    created: float
    body: dict
    overlay: Path | None
    folder: Path


@dataclass
class ResultStore:
    """Recent results by random id, bounded in count and age. Each result's files live in its own
    folder, removed when the result is evicted. Used from the event loop only."""

    root: Path
    ttl_s: float
    max_items: int
    clock: Callable[[], float] = time.monotonic
    _items: OrderedDict[str, StoredResult] = field(default_factory=OrderedDict, init=False, repr=False)

    def reserve(self) -> tuple[str, Path]:
        result_id = secrets.token_urlsafe(16)
        folder = self.root / result_id
        folder.mkdir()
        return result_id, folder

    @staticmethod
    def release(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def add(self, result_id: str, owner: str, body: dict, overlay: str | None, folder: Path) -> None:
        self._expire()
        self._items[result_id] = StoredResult(owner, self.clock(), body, Path(overlay) if overlay else None, folder)
        while len(self._items) > self.max_items:
            self.release(self._items.popitem(last=False)[1].folder)

    def get(self, result_id: str, owner: str) -> StoredResult | None:
        """A result only for the key that made it: to any other key it does not exist."""
        self._expire()
        item = self._items.get(result_id)
        return item if item is not None and item.owner == owner else None

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        while self._items and next(iter(self._items.values())).created < cutoff:
            self.release(self._items.popitem(last=False)[1].folder)


def public_dict(result: AnalysisResult) -> dict:
    """``to_dict()`` without server paths, with non-finite numbers as null (JSON has no NaN)."""
    body = result.to_dict()
    for key in PATH_KEYS:
        body.pop(key, None)
    for frame in body.get("timeline", []):
        frame.pop("heatmap_overlay_path", None)
    return json_safe(body)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def status_for(error: DeepfakeError) -> int:
    if isinstance(error, (NotMediaError, UnsupportedFormatError)):
        return 415
    if isinstance(error, InputError):
        return 422
    if isinstance(error, ModelError):
        return 503
    return 500


class _TooLarge(MultiPartException):
    """Raised from inside the multipart parser so that it closes its temporary files."""


# --- uploads ------------------------------------------------------------------------------------


@dataclass
class Upload:
    data: bytes
    name: str
    fields: dict[str, str]


@dataclass
class Options:
    threshold: float | None
    explain: bool
    num_frames: int


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, refused as soon as it passes ``limit``: never more is held or spooled."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _TooLarge("too large")
        yield chunk


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The upload is over the {limit / 2**20:g} MiB limit.")


def safe_name(filename: str | None) -> str:
    """The uploaded file's own name, without any client-side folders."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name[:MAX_NAME_LENGTH] or "upload"


async def read_upload(request: Request, limit: int) -> Upload:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", "Send the file as multipart/form-data in a field named 'file'.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parser = MultiPartParser(request.headers, _bounded(request.stream(), limit), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except _TooLarge:
        raise _too_large(limit) from None
    except MultiPartException as exc:
        raise ApiError(422, "bad_request", f"The multipart body could not be read: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "No file: send it in a multipart field named 'file'.")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return Upload(await upload.read(), safe_name(upload.filename), fields)
    finally:
        await form.close()


def parse_options(fields: dict[str, str]) -> Options:
    def bad(name: str, why: str) -> ApiError:
        return ApiError(422, "invalid_option", f"'{name}' {why}.")

    threshold = None
    if fields.get("threshold", "").strip():
        try:
            threshold = float(fields["threshold"])
        except ValueError:
            raise bad("threshold", "must be a number") from None
        if not 0.0 <= threshold <= 1.0:
            raise bad("threshold", "must be between 0 and 1")
    explain = fields.get("explain", "true").strip().lower()
    if explain not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise bad("explain", "must be true or false")
    try:
        num_frames = int(fields.get("num_frames", "32"))
    except ValueError:
        raise bad("num_frames", "must be a whole number") from None
    if not 1 <= num_frames <= MAX_NUM_FRAMES:
        raise bad("num_frames", f"must be between 1 and {MAX_NUM_FRAMES}")
    return Options(threshold, explain in ("true", "1", "yes", "on"), num_frames)


def _upload_doc(kind: str) -> dict:
    """The request body for /docs; the body is parsed by hand, so FastAPI cannot infer it."""
    properties: dict[str, dict] = {
        "file": {"type": "string", "format": "binary", "description": f"the {kind}"},
        "threshold": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "FAKE at or above this probability (default: the model's)",
        },
        "explain": {"type": "boolean", "default": True, "description": "Grad-CAM heatmap and suspicious regions"},
    }
    if kind == "video":
        properties["num_frames"] = {"type": "integer", "minimum": 1, "maximum": MAX_NUM_FRAMES, "default": 32}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


ERROR_SCHEMA = {
    "description": "error",
    "content": {"application/json": {"example": {"error": "corrupt_file", "detail": "'x.jpg' is truncated ..."}}},
}


# --- the app ------------------------------------------------------------------------------------


@dataclass
class _State:
    engine: DetectionEngine
    images: ImageDeepfakeDetector
    videos: VideoDeepfakeDetector
    store: ResultStore
    slots: asyncio.Semaphore


def create_app(settings: ApiSettings, engine_factory: Callable[[], DetectionEngine]) -> FastAPI:
    """The API. ``engine_factory`` is called once, at start-up."""
    limiter = RateLimiter(settings.rate, settings.burst)
    state: dict[str, _State] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine = await run_in_threadpool(engine_factory)
        root = Path(tempfile.mkdtemp(prefix="deepfake-api-"))
        state["s"] = _State(engine, ImageDeepfakeDetector(engine=engine), VideoDeepfakeDetector(engine=engine),
                            ResultStore(root, settings.result_ttl_s, settings.max_results),
                            asyncio.Semaphore(settings.workers))  # fmt: skip
        try:
            yield
        finally:
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(
        title="Deepfake detection API",
        version=__version__,
        description=f"Send images and videos; get a verdict, a probability and a Grad-CAM heatmap. "
        f"Every route but `/v1/health` needs an API key in the `{API_KEY_HEADER}` header.",
        lifespan=lifespan,
        responses={code: ERROR_SCHEMA for code in (401, 403, 429)},
    )
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="your API key")

    async def authorised(key: str | None = Security(key_header)) -> str:
        """The caller's key hash, after the key check and the rate limit."""
        if not key:
            raise ApiError(401, "missing_api_key", f"Send your API key in the {API_KEY_HEADER} header.")
        owner = match_key(settings.key_hashes, key)
        if owner is None:
            raise ApiError(403, "invalid_api_key", "The API key is not valid.")
        wait = limiter.take(owner)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, "rate_limited", f"Too many requests for this key; retry in {retry} s.",
                           headers={"Retry-After": str(retry)})  # fmt: skip
        return owner

    async def analyse(request: Request, owner: str, kind: str) -> JSONResponse:
        s = state["s"]
        upload = await read_upload(request, settings.max_upload_bytes)
        options = parse_options(upload.fields)
        media = await run_in_threadpool(read_media, upload.data, upload.name)  # hashing 200 MB takes a while
        if media.kind != kind:
            raise ApiError(415, "wrong_media_kind", f"'{media.name}' is {'an' if media.kind == 'image' else 'a'} "
                           f"{media.kind}; send it to /v1/detect/{media.kind}.")  # fmt: skip
        result_id, folder = s.store.reserve()
        if kind == "image":
            work = partial(s.images.detect, media, name=media.name, threshold=options.threshold,
                           explain=options.explain, output_dir=folder)  # fmt: skip
            timeout = settings.image_timeout_s
        else:
            work = partial(s.videos.detect, media, name=media.name, threshold=options.threshold,
                           explain=options.explain, num_frames=options.num_frames, output_dir=folder)  # fmt: skip
            timeout = settings.video_timeout_s
        await s.slots.acquire()
        task = asyncio.ensure_future(run_in_threadpool(work))
        task.add_done_callback(lambda _: s.slots.release())  # the slot is held while the thread works
        try:
            # shield: on timeout, wait_for must not wait for the thread (which cannot be stopped) to end.
            result = await asyncio.wait_for(asyncio.shield(task), timeout)
        except BaseException as exc:
            # Runs now if the analysis failed, or when an abandoned one ends.
            task.add_done_callback(lambda _: s.store.release(folder))
            if isinstance(exc, TimeoutError):
                raise ApiError(504, "timeout", f"The analysis took over {timeout:g} s and was abandoned; "
                               "try fewer frames or a shorter clip.") from None  # fmt: skip
            raise
        body = {"id": result_id, **public_dict(result)}
        body["heatmap_url"] = f"/v1/results/{result_id}/heatmap.png" if result.heatmap_overlay_path else None
        s.store.add(result_id, owner, body, result.heatmap_overlay_path, folder)
        return JSONResponse(body)

    @app.post("/v1/detect/image", openapi_extra=_upload_doc("image"), tags=["detect"],
              responses={c: ERROR_SCHEMA for c in (413, 415, 422, 504)})  # fmt: skip
    async def detect_image(request: Request, owner: str = Security(authorised)) -> JSONResponse:
        """Analyse one image: verdict, fake probability, faces, explanation and a heatmap URL."""
        return await analyse(request, owner, "image")

    @app.post("/v1/detect/video", openapi_extra=_upload_doc("video"), tags=["detect"],
              responses={c: ERROR_SCHEMA for c in (413, 415, 422, 504)})  # fmt: skip
    async def detect_video(request: Request, owner: str = Security(authorised)) -> JSONResponse:
        """Analyse a video from ``num_frames`` evenly sampled frames: verdict, timeline, heatmap of the worst frame."""
        return await analyse(request, owner, "video")

    @app.get("/v1/results/{result_id}", tags=["results"], responses={404: ERROR_SCHEMA})
    async def get_result(result_id: str, owner: str = Security(authorised)) -> JSONResponse:
        """A recent result again (kept for the server's result TTL)."""
        return JSONResponse(_stored(result_id, owner).body)

    @app.get("/v1/results/{result_id}/heatmap.png", tags=["results"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}, 404: ERROR_SCHEMA})  # fmt: skip
    async def heatmap(result_id: str, owner: str = Security(authorised)) -> FileResponse:
        """The Grad-CAM overlay of a result (for a video, of its most suspicious frame)."""
        item = _stored(result_id, owner)
        if item.overlay is None or not item.overlay.is_file():
            raise ApiError(404, "no_heatmap", "This result has no heatmap (it was analysed with explain=false).")
        return FileResponse(item.overlay, media_type="image/png")

    def _stored(result_id: str, owner: str) -> StoredResult:
        item = state["s"].store.get(result_id, owner)
        if item is None:
            raise ApiError(
                404, "result_not_found", "No such result: it never existed, expired or belongs to another key."
            )
        return item

    @app.get("/v1/health", tags=["service"])
    async def health() -> dict:
        """Liveness without a key (for load balancers and container health checks)."""
        return {"status": "ok", "model_loaded": "s" in state, "version": __version__}

    @app.get("/v1/model", tags=["service"])
    async def model_info(owner: str = Security(authorised)) -> dict:
        """The model in use: name, version, decision threshold and its validation metrics."""
        engine = state["s"].engine
        model = engine.model
        return json_safe({
            "name": model.name,
            "version": model.version,
            "arch": model.config.arch,
            "threshold": model.threshold,
            "temperature": model.temperature,
            "input_size": model.config.input_size,
            "cam_available": engine.cam_available,
            "metrics": {k: v for k, v in model.metrics.items() if k != "history"},  # per-epoch curve left out
            "trained_on": model.trained_on,
        })  # fmt: skip

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(DeepfakeError)
    async def on_engine_error(_: Request, exc: DeepfakeError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("engine error %s: %s", exc.code, exc.message)  # the message may name server paths
            return _error(status, exc.code, "The model is not available; the error was logged on the server.")
        return _error(status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, "invalid_request", where or "The request is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(_: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log (Starlette re-raises to the server); the client gets no internals.
        return _error(500, "internal_error", "The server failed to handle the request; the error was logged.")

    return app


def serve(settings: ApiSettings, engine: DetectionEngine, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn (one process: the engine is loaded once and shared)."""
    import uvicorn

    uvicorn.run(create_app(settings, lambda: engine), host=host, port=port, log_level="info",
                server_header=False, proxy_headers=False)  # fmt: skip
