"""Result exports: one row per finished item, written as JSON, JSON Lines or CSV.

Both the per-job export (``GET /api/v2/jobs/{id}/results/``) and ``data_export`` jobs (one file
over several jobs) produce these rows; CSV holds ``result`` as a JSON string so that it parses
back to the same value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from sqlalchemy import RowMapping

from conveyor.domain.work import shown_source

Format = Literal["json", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("json", "jsonl", "csv")
FIELDS = ["job_id", "item_id", "seq", "name", "source", "status", "result", "error", "duration_ms"]
MEDIA_TYPES: dict[str, str] = {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"}
CSV_FLUSH_BYTES = 64 * 1024


def row(job_id: int, item: RowMapping) -> dict[str, Any]:
    """The exported fields of one finished item row."""
    return {
        "job_id": job_id,
        "item_id": item["id"],
        "seq": item["seq"],
        "name": item["name"],
        "source": shown_source(item["source"], item.get("ref")),
        "status": item["status"],
        "result": item["result"],
        "error": item["error"],
        "duration_ms": item["duration_ms"],
    }


def encode(rows: Iterable[dict[str, Any]], fmt: Format) -> Iterator[str]:
    """The rows as text in ``fmt``, streamed in pieces."""
    if fmt == "jsonl":
        return (json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        return _csv(rows)
    return _json_array(rows)


def _json_array(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for index, r in enumerate(rows):
        yield ("," if index else "") + json.dumps(r)
    yield "]"


def _csv(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "result": json.dumps(r["result"]) if r["result"] is not None else ""})
        if buffer.tell() > CSV_FLUSH_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
