"""The API's analyses as jobs, kept in an embedded SQLite database so that a restart loses nothing.

A job is one uploaded file and its options. Its upload waits on disk (never in memory) in the job's
folder beside the database until a worker takes it; when the analysis ends the upload is deleted
and only the files its result can serve (its heatmaps) are kept. A finished job *is* the result the
``/v1/results`` routes serve. On start-up, jobs that were queued or running when the server stopped
are queued again. Finished jobs are removed by age, by count and by the bytes their files take.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP_FOLDER = "deepfake-workbench"
UPLOAD_FILE = "upload"
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,       -- hash of the API key that made it: only that key can see it
    kind TEXT NOT NULL,        -- image | video
    name TEXT NOT NULL,        -- the uploaded file's name, without client folders
    options TEXT NOT NULL,     -- JSON: threshold, explain, num_frames
    status TEXT NOT NULL,      -- queued | running | done | failed | cancelled
    created REAL NOT NULL,     -- Unix time: survives restarts, unlike a monotonic clock
    updated REAL NOT NULL,
    result TEXT,               -- JSON: the response body of a done job
    error TEXT,                -- JSON: {"error", "detail"} of a failed or cancelled job
    overlay TEXT,              -- file name of the heatmap in the job's folder
    bytes INTEGER NOT NULL DEFAULT 0  -- bytes the job's kept files take
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, updated);
"""


def default_data_dir() -> Path:
    """Where the server keeps its database when ``--data-dir`` is not given: the user's data
    folder (``%LOCALAPPDATA%`` on Windows, else ``$XDG_DATA_HOME`` or ``~/.local/share``)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_FOLDER / "api"


@dataclass
class Job:
    id: str
    owner: str
    kind: str
    name: str
    options: dict[str, Any]
    status: str
    created: float
    updated: float
    result: dict | None = None
    error: dict | None = None
    overlay: str | None = None
    bytes: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(row["id"], row["owner"], row["kind"], row["name"], json.loads(row["options"]), row["status"],
                   row["created"], row["updated"], json.loads(row["result"]) if row["result"] else None,
                   json.loads(row["error"]) if row["error"] else None, row["overlay"], row["bytes"])  # fmt: skip


@dataclass
class Retention:
    """How long and how much of the finished jobs is kept."""

    ttl_s: float
    max_items: int
    max_bytes: int


@dataclass
class JobStore:
    """Jobs in ``root/jobs.sqlite3`` (WAL: readers never wait for the writer) and their files in
    ``root/jobs/<id>/``. Thread-safe: one connection behind a lock; every statement is short."""

    root: Path
    retention: Retention
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it consistent after a crash
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def upload_path(self, job_id: str) -> Path:
        return self.folder(job_id) / UPLOAD_FILE

    def add(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, owner, kind, name, options, status, created, updated) VALUES (?,?,?,?,?,?,?,?)",
                (job.id, job.owner, job.kind, job.name, json.dumps(job.options), job.status, job.created, job.updated),
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def active(self) -> list[Job]:
        """Jobs that were queued or running, oldest first (to queue again after a restart)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created", ACTIVE).fetchall()
        return [Job.from_row(r) for r in rows]

    def set_status(self, job_id: str, status: str, only_if: tuple[str, ...] = ACTIVE) -> bool:
        """Move an active job to ``status``; False if it had already finished."""
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE jobs SET status = ?, updated = ? WHERE id = ? AND status IN ({','.join('?' * len(only_if))})",
                (status, self.clock(), job_id, *only_if),
            )
        return cursor.rowcount == 1

    def finish(self, job_id: str, status: str, *, result: dict | None = None, error: dict | None = None,
               overlay: Path | None = None, served: Iterable[Path] = ()) -> bool:  # fmt: skip
        """Record how a job ended and delete every file of it but those its result serves: the
        heatmap (``overlay``, whose name is recorded) and ``served`` (a video's frame heatmaps).
        Their bytes count against the store's limit. False, and nothing changed, if it had already
        ended (e.g. cancelled while it ran: the worker then calls :meth:`drop_files`)."""
        folder = self.folder(job_id)
        kept = {p.name: p.stat().st_size for p in (overlay, *served)
                if p is not None and p.parent == folder and p.is_file()}  # fmt: skip
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET status = ?, updated = ?, result = ?, error = ?, overlay = ?, bytes = ? "
                "WHERE id = ? AND status IN (?, ?)",
                (status, self.clock(), json.dumps(result) if result is not None else None,
                 json.dumps(error) if error is not None else None,
                 overlay.name if overlay is not None and overlay.name in kept else None, sum(kept.values()),
                 job_id, *ACTIVE),
            )  # fmt: skip
        if cursor.rowcount != 1:
            return False
        if not kept:
            self.drop_files(job_id)
        else:
            for path in folder.iterdir():
                if path.name not in kept:
                    _remove(path)
        return True

    def expire(self) -> int:
        """Remove finished jobs past the age, count or bytes allowed, oldest first; how many went."""
        cutoff = self.clock() - self.retention.ttl_s
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, updated, bytes FROM jobs WHERE status IN ({','.join('?' * len(FINISHED))}) "
                "ORDER BY updated DESC",
                FINISHED,
            ).fetchall()
        total, doomed = 0, []
        for count, row in enumerate(rows, 1):
            total += row["bytes"]
            if row["updated"] < cutoff or count > self.retention.max_items or total > self.retention.max_bytes:
                doomed.append(row["id"])
        if doomed:
            with self._lock:
                self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in doomed])
            for job_id in doomed:
                shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return len(doomed)

    def drop_files(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
