"""One file's analysis for a scan, shared by the local scan (CLI), the Ray scan and the scan through
an API server (``scan --server``).

All write the same rows of the export schema; a bad file is a failed row, never a crash.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from deepfake.detector import ImageDeepfakeDetector, overlay_name
from deepfake.engine import DetectionEngine
from deepfake.errors import DeepfakeError, InputError
from deepfake.exports import history_row
from deepfake.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_media
from deepfake.provenance.settings import ProvenanceSettings
from deepfake.results import history_row_of
from deepfake.video import VideoDeepfakeDetector

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("deepfake.interfaces.scanning")

API_KEY_ENV = "DEEPFAKE_API_KEY"
# Waits between polls of one job: a photo is answered within a second, and a long video costs few requests.
POLL_S = (0.25, 0.5, 1.0, 2.0)
MAX_REFUSALS = 30  # 429s and 503s in a row for one request before its file is given up ...
MAX_WAIT_S = 60.0  # ... each waited for as long as Retry-After says, up to this


@dataclass(frozen=True)
class ScanOptions:
    """What every file of a scan is analysed with (also shipped to Ray workers)."""

    threshold: float | None = None
    explain: bool = False
    heatmaps: str | None = None
    num_frames: int = 32
    provenance: ProvenanceSettings | None = None  # None: $DEEPFAKE_TRUST_ANCHORS, no GPS coordinates


@dataclass
class Outcome:
    """One file's row of the export schema, and its full ``to_dict()`` unless it failed."""

    index: int
    row: dict
    result: dict | None



def analyse_file(
    images: ImageDeepfakeDetector, videos: VideoDeepfakeDetector, path: str, options: ScanOptions
) -> tuple[dict, dict | None]:
    """Analyse one file with the given image and video detectors; never raises for a bad file."""
    kind = sha256 = ""  # known once the file is read
    try:
        media = read_media(path, name=path)
        kind, sha256 = media.kind, media.sha256
        common = {"name": media.name, "threshold": options.threshold, "explain": options.explain,
                  "output_dir": options.heatmaps}  # fmt: skip
        if media.kind == "image":
            result = images.detect(media, **common)
        else:
            result = videos.detect(media, num_frames=options.num_frames, **common)
    except DeepfakeError as exc:
        return history_row(file_name=path, error=exc.message, media_type=kind, sha256=sha256), None
    except Exception as exc:  # noqa: BLE001 - one file the engine chokes on must not end a scan of thousands
        log.warning("unexpected failure on %s", path, exc_info=True)  # a bug, not a bad file: keep the traceback
        error = f"unexpected error: {type(exc).__name__}: {exc}"
        return history_row(file_name=path, error=error, media_type=kind, sha256=sha256), None
    return result.history_row(), result.to_dict()


def find_files(paths: list[str], recursive: bool) -> list[str]:
    """Media files in the given folders (by extension) plus every file named explicitly, in order, once."""
    found: list[str] = []
    for given in paths:
        folder = Path(given)
        if folder.is_dir():
            entries = folder.rglob("*") if recursive else folder.iterdir()
            found += sorted(str(p) for p in entries
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)  # fmt: skip
        else:
            found.append(given)  # a missing or odd file is reported as a failed row, not dropped
    return list(dict.fromkeys(found))


def scan_local(files: list[str], engine: DetectionEngine, options: ScanOptions, workers: int) -> Iterator[Outcome]:
    """Outcomes in input order. Threads share the engine, whose lock serialises model calls."""
    images = ImageDeepfakeDetector(engine=engine, provenance=options.provenance)
    videos = VideoDeepfakeDetector(engine=engine, provenance=options.provenance)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan")
    try:
        yield from _in_order(pool, lambda path: analyse_file(images, videos, path, options), files, workers)
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C or an error downstream, stop after the files in hand


def _in_order(pool: ThreadPoolExecutor, analyse: Callable[[str], tuple[dict, dict | None]], files: list[str],
              workers: int) -> Iterator[Outcome]:  # fmt: skip
    """Each file's outcome, in input order; only a window of files is in flight, so memory does
    not grow with the collection."""
    pending: deque[tuple[int, Future]] = deque()
    for index, path in enumerate(files):
        pending.append((index, pool.submit(analyse, path)))
        if len(pending) > 2 * workers:
            done, future = pending.popleft()
            yield Outcome(done, *future.result())
    while pending:
        done, future = pending.popleft()
        yield Outcome(done, *future.result())


# --- through an API server ----------------------------------------------------------------------


class ServerError(DeepfakeError):
    """The server cannot be used at all: unreachable, the key refused, or not the deepfake API.
    It ends a scan (every file would fail alike); one file's failure is a failed row instead."""

    code = "server_error"


class _FileFailed(Exception):
    """One file could not be analysed on the server: its row gets this message."""


class _Stopped(Exception):
    """The scan is being stopped (Ctrl-C, or a failure elsewhere): a worker leaves its file."""


def heatmap_files(result: dict) -> list[tuple[str, str]]:
    """(URL, file name) of every heatmap a server's result refers to, named as a local scan names
    the files it writes: a photo's overlay, or each of a video's most suspicious frames."""
    sha256, method = result["sha256"], result["cam_method"]
    if result["media_type"] == "video":
        return [(frame["heatmap_url"], overlay_name(sha256, method, frame["index"]))
                for frame in result["timeline"] if frame.get("heatmap_url")]  # fmt: skip
    return [(result["heatmap_url"], overlay_name(sha256, method))] if result.get("heatmap_url") else []


@dataclass
class RemoteScan:
    """``scan --server URL``: every file is a job on a running API server (``POST /v1/jobs``, then
    ``GET /v1/jobs/{id}`` until it ends), ``workers`` files at a time. A full queue (503) and the
    rate limit (429) are waited out as ``Retry-After`` says (bounded: :data:`MAX_REFUSALS`); a
    stopped scan cancels the jobs it left (``DELETE /v1/jobs/{id}``). Use it as a context manager:
    entering checks that the server answers and takes the key."""

    url: str
    api_key: str | None
    options: ScanOptions
    workers: int
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _outstanding: set[str] = field(default_factory=set, init=False, repr=False)  # jobs queued or running

    def __enter__(self) -> RemoteScan:
        import httpx  # only a scan through a server needs an HTTP client

        from deepfake.interfaces.api import API_KEY_HEADER

        self.url = self.url.rstrip("/")
        try:
            # Connecting fails fast; an answer may wait for a large upload to be stored.
            self._client = httpx.Client(base_url=self.url, headers={API_KEY_HEADER: self.api_key or ""},
                                        timeout=httpx.Timeout(120.0, connect=10.0))  # fmt: skip
        except httpx.InvalidURL as exc:
            raise ServerError(f"'{self.url}' is not a server's URL ({exc}).") from None
        try:
            response = self._request("GET", "/v1/model")
            if response.status_code != 200 or "version" not in _json(response):
                raise ServerError(f"{self.url} does not answer as the deepfake API (GET /v1/model: HTTP "
                                  f"{response.status_code}).")  # fmt: skip
        except BaseException:
            self._client.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="remote")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        """Stop (on Ctrl-C or an error, mid-scan) and cancel the jobs still on the server."""
        self._stop.set()  # waiting workers leave at once; one sending a file finishes sending it
        self._pool.shutdown(cancel_futures=True)
        for job_id in sorted(self._outstanding):
            try:
                self._client.delete(f"/v1/jobs/{job_id}")
            except Exception:  # noqa: BLE001 - stopping must not fail on a server that went away
                log.warning("could not cancel job %s on %s", job_id, self.url)
        self._client.close()

    def run(self, files: list[str]) -> Iterator[Outcome]:
        """Outcomes in input order."""
        return _in_order(self._pool, self.analyse, files, self.workers)

    def analyse(self, path: str) -> tuple[dict, dict | None]:
        """One file's row and the server's result JSON; never raises for a bad file."""
        kind = sha256 = ""
        try:
            media = read_media(path, name=path)  # the local scan's checks and messages: missing, empty, not media
            kind, sha256 = media.kind, media.sha256
            result = self._job(Path(path).name, media.data)
            if self.options.heatmaps:
                self._download_heatmaps(result, Path(self.options.heatmaps))
            return history_row_of(result, path), result
        except (InputError, _FileFailed) as exc:
            message = exc.message if isinstance(exc, InputError) else str(exc)
            return history_row(file_name=path, error=message, media_type=kind, sha256=sha256), None
        except (ServerError, _Stopped):
            raise
        except (KeyError, TypeError) as exc:  # JSON without the fields of the API's schema
            raise ServerError(f"{self.url} answered JSON that is not the deepfake API's ({exc!r}).") from None
        except Exception as exc:  # noqa: BLE001 - as in analyse_file: one file (say, unreadable) must not end a scan
            log.warning("unexpected failure on %s", path, exc_info=True)
            error = f"unexpected error: {type(exc).__name__}: {exc}"
            return history_row(file_name=path, error=error, media_type=kind, sha256=sha256), None

    def _job(self, name: str, data: bytes) -> dict:
        """Queue the file, wait for its job to end; its result JSON, or _FileFailed with the server's reason."""
        fields = {"explain": str(self.options.explain).lower(), "num_frames": str(self.options.num_frames)}
        if self.options.threshold is not None:
            fields["threshold"] = str(self.options.threshold)
        response = self._request("POST", "/v1/jobs", files={"file": (name, data)}, data=fields)
        if response.status_code != 202:
            raise _FileFailed(_detail(response))
        job_id = _json(response)["id"]
        with self._lock:
            self._outstanding.add(job_id)
        for wait in itertools.chain(POLL_S, itertools.repeat(POLL_S[-1])):
            if self._stop.wait(wait):
                raise _Stopped
            response = self._request("GET", f"/v1/jobs/{job_id}")
            if response.status_code != 200:
                raise _FileFailed(_detail(response))
            job = _json(response)
            if job["status"] not in ("queued", "running"):
                break
        with self._lock:
            self._outstanding.discard(job_id)
        if job["status"] != "done":
            raise _FileFailed((job.get("error") or {}).get("detail") or f"The job ended {job['status']}.")
        return job["result"]

    def _download_heatmaps(self, result: dict, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for url, name in heatmap_files(result):
            response = self._request("GET", url)
            if response.status_code != 200:
                raise _FileFailed(f"Its heatmap could not be fetched: {_detail(response)}")
            (folder / name).write_bytes(response.content)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, with 429 and 503 + Retry-After waited out. An unreachable server or a
        refused key raises ServerError; a connection broken while the server still answers (it
        may close it on an upload over its limit) is this file's failure."""
        import httpx

        for _ in range(MAX_REFUSALS):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if self._stop.is_set():
                    raise _Stopped from None
                reason = str(exc) or type(exc).__name__
                if not self._alive():
                    raise ServerError(f"Cannot reach the server at {self.url}: {reason}.") from None
                raise _FileFailed(f"The connection to the server broke ({reason}).") from None
            if response.status_code in (401, 403):
                raise ServerError(f"The server at {self.url} refused the API key: {_detail(response)}")
            retry = response.headers.get("Retry-After", "")
            if response.status_code not in (429, 503) or not retry.isdigit():  # a 503 without it: no use waiting
                return response
            if self._stop.wait(min(MAX_WAIT_S, max(1, int(retry)))):
                raise _Stopped
        raise _FileFailed(f"The server stayed busy ({_detail(response)}); gave up after {MAX_REFUSALS} tries.")

    def _alive(self) -> bool:
        try:
            return self._client.get("/v1/health", timeout=5.0).status_code == 200
        except Exception:  # noqa: BLE001 - any failure to answer means it is gone
            return False


def _body(response: httpx.Response) -> dict | None:
    """The response's JSON object, or None if it is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(response: httpx.Response) -> dict:
    body = _body(response)
    if body is None:
        raise ServerError(f"{response.request.url} answered HTTP {response.status_code} without the API's JSON.")
    return body


def _detail(response: httpx.Response) -> str:
    """The server's reason for an error response, or its status when it gave none."""
    body = _body(response)
    if body is not None and isinstance(body.get("detail"), str):
        return body["detail"]
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()
