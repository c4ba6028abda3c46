"""Exports of analysis history: CSV and JSON with one schema (``HISTORY_COLUMNS``), shared by the
dashboard, the API and the CLI. Plain functions returning bytes/str, so they are tested directly."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from deepfake.results import HISTORY_COLUMNS, AnalysisResult, now_iso


def history_row(result: AnalysisResult | None = None, *, file_name: str = "", error: str = "",
                media_type: str = "", sha256: str = "") -> dict:  # fmt: skip
    """A row for a result, or for a file that failed (verdict ERROR, the error's message)."""
    if result is not None:
        return result.history_row()
    row = {column: "" for column in HISTORY_COLUMNS}
    row.update(analyzed_at=now_iso(), file_name=file_name, sha256=sha256, media_type=media_type,
               verdict="ERROR", error=error)  # fmt: skip
    return row


def history_csv(rows: Iterable[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def history_json(rows: Iterable[dict], results: Iterable[dict] | None = None) -> str:
    """``{"schema": [...], "rows": [...]}``, optionally with each analysis's full ``to_dict()``."""
    payload: dict = {"schema": list(HISTORY_COLUMNS), "rows": [{k: row.get(k, "") for k in HISTORY_COLUMNS} for row in rows]}
    if results is not None:
        payload["results"] = list(results)
    return json.dumps(payload, indent=1)
