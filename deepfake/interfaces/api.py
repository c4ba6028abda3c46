"""REST API: ``python -m deepfake serve``. FastAPI app with API keys, a rate limit per key and upload limits.

Responses carry the same ``to_dict()`` schema as the dashboard's exports, plus ``id`` and
``heatmap_url``, with server file paths removed. Errors are ``{"error": code, "detail": message}``.
The model is loaded once at start-up. Every analysis is a job (:mod:`deepfake.interfaces.jobs`):
its upload waits on disk in a bounded queue, ``workers`` tasks run jobs in threads (so the event
loop and ``/v1/health`` stay responsive), and the synchronous ``/v1/detect`` routes are a job and
a wait. Jobs and results live in SQLite under ``data_dir``, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.staticfiles import StaticFiles

from deepfake import __version__
from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import (
    AnalysisCancelled,
    DeepfakeError,
    InputError,
    ModelError,
    NotMediaError,
    UnsupportedFormatError,
)
from deepfake.interfaces.jobs import Job, JobStore, Retention
from deepfake.media import read_media
from deepfake.provenance.settings import ProvenanceSettings
from deepfake.results import AnalysisResult, VideoResult
from deepfake.video import VideoDeepfakeDetector

log = logging.getLogger("deepfake.interfaces.api")

API_KEY_HEADER = "X-API-Key"
KEYS_ENV = "DEEPFAKE_API_KEYS"
MAX_NUM_FRAMES = 256
MAX_NAME_LENGTH = 200
# Paths on the server are nobody else's business: these keys are dropped from every response.
PATH_KEYS = ("heatmap_overlay_path", "annotated_video_path")
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc, from the fastapi-offline package: /docs works offline


@dataclass(frozen=True)
class ApiSettings:
    """Everything ``create_app`` needs besides the engine. Rates are per key."""

    key_hashes: frozenset[str]
    rate: float = 2.0  # requests per second refilled into each key's bucket; <= 0 turns the limit off
    burst: int = 30  # bucket size: requests a key may make at once
    max_upload_bytes: int = 200 * 2**20
    image_timeout_s: float = 60.0
    video_timeout_s: float = 300.0
    result_ttl_s: float = 3600.0  # finished results (and their heatmaps) are kept this long ...
    max_results: int = 1000  # ... this many at most ...
    max_store_bytes: int = 2 * 2**30  # ... in at most this many bytes of files
    workers: int = 4  # analyses at once
    # Jobs waiting or running, on the whole server and for one key: past these a request gets 503
    # with Retry-After before its body is read. A waiting upload is on disk, not in memory.
    queue_size: int = 32
    key_queue: int = 8
    # Bytes of uploads under analysis at once. An analysis holds about four times its file in memory
    # (the bytes, and the copies made reading content credentials), so large files take turns
    # instead of adding up; a file larger than this is analysed alone.
    analysis_bytes: int = 300 * 2**20
    # Where jobs, results and heatmaps are kept (SQLite + files); None: a temporary folder removed
    # at shutdown (``serve`` defaults to the user's data folder, see jobs.default_data_dir).
    data_dir: Path | None = None
    # Trust anchors for content credentials, and whether GPS coordinates may leave the server
    # (None: $DEEPFAKE_TRUST_ANCHORS, and never: responses only say that a location is present).
    provenance: ProvenanceSettings | None = None

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


async def receive_upload(request: Request, limit: int, path: Path) -> tuple[str, dict[str, str]]:
    """Store the request's file at ``path``; its name (without client folders) and the form's
    other fields. The body is never held in memory: the parser spools a file past 1 MiB to disk."""
    # Media types are case-insensitive (RFC 9110): MULTIPART/FORM-DATA is as good as the lower case.
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
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
        await run_in_threadpool(_copy_to, upload.file, path)
        return safe_name(upload.filename), {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()


def _copy_to(source: BinaryIO, path: Path) -> None:
    source.seek(0)
    with path.open("wb") as target:
        shutil.copyfileobj(source, target, 2**20)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # lost (the job then fails as such)
        return 0


def _head(path: Path, size: int = 512) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


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


# --- admission ----------------------------------------------------------------------------------


class Admission:
    """Bounded queues: at most ``total`` jobs waiting or running on the server and ``per_key`` for
    one key. A request is admitted before its body is read, so a full server answers 503 at once
    instead of taking (and holding) another upload. Used from the event loop only."""

    def __init__(self, total: int, per_key: int, workers: int) -> None:
        self.total, self.per_key, self.workers = max(1, total), max(1, per_key), max(1, workers)
        self.counts: Counter[str] = Counter()
        self.mean_s = 2.0  # running mean of an analysis's length, for Retry-After

    def enter(self, owner: str, force: bool = False) -> None:
        full = sum(self.counts.values()) >= self.total
        if not force and (full or self.counts[owner] >= self.per_key):
            ahead = sum(self.counts.values()) if full else self.counts[owner]
            retry = min(300, max(1, math.ceil(self.mean_s * ahead / self.workers)))
            whose = "The server's queue" if full else "This key's queue"
            raise ApiError(503, "queue_full", f"{whose} of analyses is full; retry in {retry} s.",
                           headers={"Retry-After": str(retry)})  # fmt: skip
        self.counts[owner] += 1

    def leave(self, owner: str, took_s: float | None = None) -> None:
        self.counts[owner] -= 1
        if self.counts[owner] <= 0:
            del self.counts[owner]
        if took_s is not None:
            self.mean_s = 0.8 * self.mean_s + 0.2 * took_s


class ByteBudget:
    """At most ``limit`` bytes taken at once; a request for more waits until nothing is taken.
    Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def held(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size
        try:
            yield
        finally:
            async with self._changed:
                self.used -= size
                self._changed.notify_all()


# --- the app ------------------------------------------------------------------------------------


@dataclass
class _Waiter:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _State:
    engine: DetectionEngine
    images: ImageDeepfakeDetector
    videos: VideoDeepfakeDetector
    store: JobStore
    queue: asyncio.Queue[str]
    admission: Admission
    budget: ByteBudget  # bytes of uploads under analysis
    cancels: dict[str, threading.Event] = field(default_factory=dict)  # jobs queued or running
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    progress: dict[str, tuple[float, str]] = field(default_factory=dict)  # written from worker threads
    stopping: bool = False


def create_app(settings: ApiSettings, engine_factory: Callable[[], DetectionEngine]) -> FastAPI:
    """The API. ``engine_factory`` is called once, at start-up."""
    limiter = RateLimiter(settings.rate, settings.burst)
    state: dict[str, _State] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine = await run_in_threadpool(engine_factory)
        temporary = settings.data_dir is None  # in-process use: nothing outlives the app
        root = Path(tempfile.mkdtemp(prefix="deepfake-api-")) if temporary else Path(settings.data_dir)
        store = JobStore(root, Retention(settings.result_ttl_s, settings.max_results, settings.max_store_bytes))
        s = _State(engine, ImageDeepfakeDetector(engine=engine, provenance=settings.provenance),
                   VideoDeepfakeDetector(engine=engine, provenance=settings.provenance), store, asyncio.Queue(),
                   Admission(settings.queue_size, settings.key_queue, settings.workers),
                   ByteBudget(settings.analysis_bytes))  # fmt: skip
        state["s"] = s
        await run_in_threadpool(store.expire)
        for job in store.active():  # what a stop interrupted starts again, in the order it came
            if not store.upload_path(job.id).is_file():
                store.finish(job.id, "failed", error=_job_error(500, "internal_error", "The upload was lost."))
                continue
            store.set_status(job.id, "queued")
            s.admission.enter(job.owner, force=True)
            _track(s, job.id)
            s.queue.put_nowait(job.id)
            log.info("job %s queued again after a restart", job.id)
        workers = [asyncio.create_task(_worker(s)) for _ in range(settings.workers)]
        try:
            yield
        finally:
            # Running analyses stop at their next checkpoint and stay "running" in the database,
            # so the next start queues them again.
            s.stopping = True
            for event in s.cancels.values():
                event.set()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            store.close()
            if temporary:
                shutil.rmtree(root, ignore_errors=True)

    def _track(s: _State, job_id: str) -> None:
        s.cancels[job_id] = threading.Event()
        s.waiters[job_id] = _Waiter()

    async def _worker(s: _State) -> None:
        while True:
            job_id = await s.queue.get()
            async with s.budget.held(_size(s.store.upload_path(job_id))):  # waits as "queued"
                await _run(s, job_id)

    async def _run(s: _State, job_id: str) -> None:
        """Analyse one job from the queue and record how it ended."""
        job = s.store.get(job_id)
        if job is None or not s.store.set_status(job_id, "running", only_if=("queued",)):
            _untrack(s, job_id, job.owner if job else None, None)  # cancelled while it waited
            return
        s.waiters[job_id].started.set()
        started = time.monotonic()
        try:
            body, overlay, frames = await run_in_threadpool(_analyse, s, job, s.cancels[job_id])
            s.store.finish(job_id, "done", result=body, overlay=overlay, served=frames)
        except AnalysisCancelled:
            if s.stopping:
                raise asyncio.CancelledError from None  # left "running": the next start resumes it
        except DeepfakeError as exc:
            status = status_for(exc)
            if status >= 500:
                log.error("engine error %s: %s", exc.code, exc.message)  # the message may name server paths
                detail = "The model is not available; the error was logged on the server."
            else:
                detail = exc.message
            s.store.finish(job_id, "failed", error=_job_error(status, exc.code, detail))
        except Exception:
            log.exception("job %s failed", job_id)
            s.store.finish(job_id, "failed", error=_job_error(
                500, "internal_error", "The server failed to analyse the file; the error was logged."))  # fmt: skip
        ended = s.store.get(job_id)
        if ended is None or ended.status != "done":  # cancelled while it ran, or failed: nothing to serve
            s.store.drop_files(job_id)
        _untrack(s, job_id, job.owner, time.monotonic() - started)
        await run_in_threadpool(s.store.expire)

    def _untrack(s: _State, job_id: str, owner: str | None, took_s: float | None) -> None:
        s.cancels.pop(job_id, None)
        s.progress.pop(job_id, None)
        waiter = s.waiters.pop(job_id, None)
        if waiter is not None:
            waiter.started.set()
            waiter.ended.set()
        if owner is not None:
            s.admission.leave(owner, took_s)

    def _analyse(s: _State, job: Job, cancel: threading.Event) -> tuple[dict, Path | None, list[Path]]:
        """One job's analysis, in a worker thread; stops at the next checkpoint once cancelled.
        The result's body, its heatmap, and (for a video) its frames' heatmaps."""

        def progress(fraction: float, stage: str) -> None:
            if cancel.is_set():
                raise AnalysisCancelled("The analysis was cancelled.")
            s.progress[job.id] = (fraction, stage)

        progress(0.0, "Reading the upload")
        media = read_media(s.store.upload_path(job.id), job.name)  # the only time the upload is in memory
        options, folder = job.options, s.store.folder(job.id)
        if job.kind == "image":
            result = s.images.detect(media, name=job.name, threshold=options["threshold"], explain=options["explain"],
                                     output_dir=folder, progress=progress)  # fmt: skip
        else:
            result = s.videos.detect(media, name=job.name, threshold=options["threshold"], explain=options["explain"],
                                     num_frames=options["num_frames"], output_dir=folder, progress=progress)  # fmt: skip
        overlay = Path(result.heatmap_overlay_path) if result.heatmap_overlay_path else None
        body = {"id": job.id, **public_dict(result)}
        body["heatmap_url"] = f"/v1/results/{job.id}/heatmap.png" if overlay else None
        frames: list[Path] = []
        # Every frame overlay the detector wrote is served (none is kept unreachable), so each is
        # moved to the name the frame route looks for; the video's heatmap is one of them.
        for frame, entry in zip(result.timeline if isinstance(result, VideoResult) else [], body.get("timeline", [])):
            entry["heatmap_url"] = None
            if frame.heatmap_overlay_path:
                served = Path(frame.heatmap_overlay_path).replace(folder / frame_heatmap(frame.index))
                if frame.heatmap_overlay_path == result.heatmap_overlay_path:
                    overlay = served
                frames.append(served)
                entry["heatmap_url"] = f"/v1/results/{job.id}/frames/{frame.index}/heatmap.png"
        return body, overlay, frames

    async def submit(request: Request, owner: str, kind: str | None) -> Job:
        """Admit, store the upload on disk, check it is media of the right kind, and queue it."""
        s = state["s"]
        s.admission.enter(owner)
        job_id = secrets.token_urlsafe(16)
        folder = s.store.folder(job_id)
        try:
            folder.mkdir()
            name, fields = await receive_upload(request, settings.max_upload_bytes, s.store.upload_path(job_id))
            options = parse_options(fields)
            media = read_media(await run_in_threadpool(_head, s.store.upload_path(job_id)), name)  # empty, not media
            if kind is not None and media.kind != kind:
                raise ApiError(415, "wrong_media_kind", f"'{name}' is {'an' if media.kind == 'image' else 'a'} "
                               f"{media.kind}; send it to /v1/detect/{media.kind} (or to /v1/jobs).")  # fmt: skip
            now = time.time()
            job = Job(job_id, owner, media.kind, name, dataclasses.asdict(options), "queued", now, now)
            s.store.add(job)
        except BaseException:
            s.admission.leave(owner)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _track(s, job_id)
        s.queue.put_nowait(job_id)
        return job

    def cancel(job_id: str) -> bool:
        """Cancel a queued or running job: it is marked at once, a running analysis stops at its
        next checkpoint (between frames or stages) and frees its worker."""
        s = state["s"]
        cancelled = s.store.finish(job_id, "cancelled", error=_job_error(409, "cancelled", "The job was cancelled."))
        if job_id in s.cancels:
            s.cancels[job_id].set()
        return cancelled

    app = FastAPI(
        title="Deepfake detection API",
        version=__version__,
        description=f"Send images and videos; get a verdict, a probability, a Grad-CAM heatmap and the evidence the "
        f"file carries about its origin (content credentials, metadata; GPS coordinates only if the server allows). "
        f"Every route but `/v1/health` needs an API key in the `{API_KEY_HEADER}` header. Long analyses can be "
        f"sent to `/v1/jobs` and polled; results and jobs survive a server restart.",
        lifespan=lifespan,
        responses={code: ERROR_SCHEMA for code in (401, 403, 429)},
        docs_url=None,  # served below from the installed package: the default loads it from a CDN
        redoc_url=None,
    )
    app.mount(DOCS_ASSETS, StaticFiles(directory=files("fastapi_offline") / "static"), name="docs-assets")
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
        """The synchronous routes: a job, and a wait for it. The timeout counts from the start of
        the analysis, not the wait in the queue; past it the job is cancelled and frees its worker."""
        s = state["s"]
        job = await submit(request, owner, kind)
        waiter = s.waiters[job.id]
        timeout = settings.image_timeout_s if kind == "image" else settings.video_timeout_s
        await waiter.started.wait()
        try:
            await asyncio.wait_for(waiter.ended.wait(), timeout)
        except TimeoutError:
            cancel(job.id)
            raise ApiError(504, "timeout", f"The analysis took over {timeout:g} s and was cancelled; "
                           "try fewer frames or a shorter clip, or send it to /v1/jobs.") from None  # fmt: skip
        done = s.store.get(job.id)
        if done is None or done.status != "done":
            error = (done.error if done else None) or _job_error(500, "internal_error", "The job was lost.")
            raise ApiError(error["status"], error["error"], error["detail"])
        return JSONResponse(done.result)

    @app.post("/v1/detect/image", openapi_extra=_upload_doc("image"), tags=["detect"],
              responses={c: ERROR_SCHEMA for c in (413, 415, 422, 503, 504)})  # fmt: skip
    async def detect_image(request: Request, owner: str = Security(authorised)) -> JSONResponse:
        """Analyse one image: verdict, fake probability, faces, explanation and a heatmap URL."""
        return await analyse(request, owner, "image")

    @app.post("/v1/detect/video", openapi_extra=_upload_doc("video"), tags=["detect"],
              responses={c: ERROR_SCHEMA for c in (413, 415, 422, 503, 504)})  # fmt: skip
    async def detect_video(request: Request, owner: str = Security(authorised)) -> JSONResponse:
        """Analyse a video from ``num_frames`` evenly sampled frames: verdict, timeline, heatmaps of the most
        suspicious frames (`heatmap_url`: the worst; each `timeline` entry's `heatmap_url`: its own, or null)."""
        return await analyse(request, owner, "video")

    @app.post("/v1/jobs", status_code=202, openapi_extra=_upload_doc("image or video"), tags=["jobs"],
              responses={202: {"description": "queued", "content": {"application/json": {"example": JOB_EXAMPLE}}},
                         **{c: ERROR_SCHEMA for c in (413, 415, 422, 503)}})  # fmt: skip
    async def create_job(request: Request, owner: str = Security(authorised)) -> JSONResponse:
        """Queue an image or a video (the same options as /v1/detect) and answer at once with the job's id;
        poll `GET /v1/jobs/{id}` for its progress and result. Jobs survive a server restart."""
        job = await submit(request, owner, None)
        return JSONResponse(_job_view(state["s"], job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", tags=["jobs"],
             responses={200: {"content": {"application/json": {"example": JOB_EXAMPLE}}}, 404: ERROR_SCHEMA})  # fmt: skip
    async def get_job(job_id: str, owner: str = Security(authorised)) -> JSONResponse:
        """A job's status (queued, running, done, failed, cancelled), progress, and when done its result:
        the same JSON as /v1/detect gives."""
        return JSONResponse(_job_view(state["s"], _job(job_id, owner)))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], responses={404: ERROR_SCHEMA, 409: ERROR_SCHEMA})
    async def delete_job(job_id: str, owner: str = Security(authorised)) -> JSONResponse:
        """Cancel a queued or running job. A running analysis stops between frames and frees its worker."""
        job = _job(job_id, owner)
        if not cancel(job.id):
            raise ApiError(409, "job_finished", f"The job has already ended ({job.status}).")
        return JSONResponse(_job_view(state["s"], _job(job_id, owner)))

    @app.get("/v1/results/{result_id}", tags=["results"], responses={404: ERROR_SCHEMA})
    async def get_result(result_id: str, owner: str = Security(authorised)) -> JSONResponse:
        """A finished result again (kept for the server's result TTL, across restarts)."""
        return JSONResponse(_result(result_id, owner).result)

    @app.get("/v1/results/{result_id}/heatmap.png", tags=["results"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}, 404: ERROR_SCHEMA})  # fmt: skip
    async def heatmap(result_id: str, owner: str = Security(authorised)) -> FileResponse:
        """The Grad-CAM overlay of a result (for a video, of its most suspicious frame)."""
        job = _result(result_id, owner)
        path = state["s"].store.folder(job.id) / job.overlay if job.overlay else None
        if path is None or not path.is_file():
            raise ApiError(404, "no_heatmap", "This result has no heatmap (it was analysed with explain=false).")
        return FileResponse(path, media_type="image/png")

    @app.get("/v1/results/{result_id}/frames/{frame_index}/heatmap.png", tags=["results"],
             response_class=FileResponse, responses={200: {"content": {"image/png": {}}}, 404: ERROR_SCHEMA})  # fmt: skip
    async def frame_heatmap_png(result_id: str, frame_index: int, owner: str = Security(authorised)) -> FileResponse:
        """The Grad-CAM overlay of one of a video's most suspicious frames: the frames whose `timeline`
        entry has a `heatmap_url` (`frame_index` is the entry's `index`, as in `suspicious_frames`)."""
        job = _result(result_id, owner)
        path = state["s"].store.folder(job.id) / frame_heatmap(frame_index)
        if not path.is_file():
            raise ApiError(404, "no_heatmap", "This frame has no heatmap: only a video's most suspicious frames "
                           "have one, and only when analysed with explain=true.")  # fmt: skip
        return FileResponse(path, media_type="image/png")

    def _job(job_id: str, owner: str) -> Job:
        job = state["s"].store.get(job_id)
        if job is None or job.owner != owner:  # another key's job does not exist for this one
            raise ApiError(404, "job_not_found", "No such job: it never existed, expired or belongs to another key.")
        return job

    def _result(result_id: str, owner: str) -> Job:
        job = state["s"].store.get(result_id)
        if job is None or job.owner != owner or job.status != "done":
            raise ApiError(
                404, "result_not_found", "No such result: it never existed, expired or belongs to another key."
            )
        return job

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)  # fmt: skip

    @app.get("/v1/health", tags=["service"])
    async def health() -> dict:
        """Liveness without a key (for load balancers and container health checks)."""
        s = state.get("s")
        return {"status": "ok", "model_loaded": s is not None, "version": __version__,
                "jobs_waiting_or_running": sum(s.admission.counts.values()) if s else 0}  # fmt: skip

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


def frame_heatmap(index: int) -> str:
    """The file name of a video frame's heatmap in its job's folder."""
    return f"frame{index:06d}.png"


def _job_error(status: int, code: str, detail: str) -> dict:
    """A failed job's error: the one error schema, plus the HTTP status the synchronous route answers."""
    return {"error": code, "detail": detail, "status": status}


def _job_view(s: _State, job: Job) -> dict:
    """What ``/v1/jobs/{id}`` shows of a job."""
    if job.status == "done":
        progress = {"fraction": 1.0, "stage": "Done"}
    else:
        fraction, stage = s.progress.get(job.id, (0.0, "Waiting for a worker" if job.status == "queued" else ""))
        progress = {"fraction": round(fraction, 3), "stage": stage}
    error = {k: job.error[k] for k in ("error", "detail")} if job.error else None
    return {"id": job.id, "kind": job.kind, "name": job.name, "status": job.status,
            "created": job.created, "updated": job.updated, "progress": progress,
            "result": job.result, "error": error}  # fmt: skip


JOB_EXAMPLE = {"id": "q3L...", "kind": "video", "name": "clip.mp4", "status": "running", "created": 1767225600.0,
               "updated": 1767225601.5, "progress": {"fraction": 0.4, "stage": "Finding faces: frame 8/20"},
               "result": None, "error": None}  # fmt: skip


def serve(settings: ApiSettings, engine: DetectionEngine, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn (one process: the engine is loaded once and shared)."""
    import uvicorn

    uvicorn.run(create_app(settings, lambda: engine), host=host, port=port, log_level="info",
                server_header=False, proxy_headers=False)  # fmt: skip
