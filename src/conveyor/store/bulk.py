"""Hot-path statements run straight on the DB-API driver.

Writing back a chunk and inserting a job's items touch thousands of rows per call; going
through SQLAlchemy's per-row parameter and type processing cost more than SQLite itself
(and ran while holding SQLite's single write lock). These statements build their
parameters once, outside the transaction where possible, and hand plain tuples to the
driver's ``executemany``. Values are stored exactly as the SQLAlchemy column types in
``tables.py`` store them, so reads through SQLAlchemy see no difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.clock import ms_between


class Dialect:
    """Placeholders, casts and datetime encoding of one database dialect."""

    def __init__(self, name: str) -> None:
        self.sqlite = name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self.json_mark = "?" if self.sqlite else "CAST(%s AS JSONB)"

    def time(self, value: datetime) -> Any:
        if not self.sqlite:
            return value
        # SQLAlchemy's SQLite DATETIME storage format, naive UTC.
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def item_insert_sql(dialect: Dialect) -> str:
    marks = ", ".join([dialect.mark] * 9)
    columns = "job_id, seq, name, kind, byte_size, data, status, attempts, source"
    return f"INSERT INTO items ({columns}) VALUES ({marks})"


def insert_items(conn: Connection, dialect: Dialect, job_id: int, rows: Sequence[dict[str, Any]]) -> None:
    params = [
        (
            job_id,
            r["seq"],
            r["name"],
            r["kind"],
            r["byte_size"],
            r["data"],
            r["status"],
            r.get("attempts", 0),
            r.get("source"),
        )
        for r in rows
    ]
    if params:
        conn.exec_driver_sql(item_insert_sql(dialect), params)


def item_result_params(dialect: Dialect, outcomes: Sequence[Any], now: datetime) -> list[tuple[Any, ...]]:
    """Parameters for ``update_items``; built before the write transaction starts."""
    times: dict[datetime, Any] = {}

    def encode(value: datetime) -> Any:
        if value not in times:
            times[value] = dialect.time(value)
        return times[value]

    params: list[tuple[Any, ...]] = []
    for o in outcomes:
        started = o.started_at or now
        finished = o.finished_at or now
        params.append(
            (
                "SUCCESS" if o.ok else "FAILURE",
                None if o.result is None else json.dumps(o.result),
                o.error,
                encode(started),
                encode(finished),
                ms_between(started, finished),
                o.id,
            )
        )
    return params


def update_items(conn: Connection, dialect: Dialect, params: list[tuple[Any, ...]]) -> None:
    m = dialect.mark
    sql = (
        f"UPDATE items SET status={m}, result={dialect.json_mark}, error={m}, started_at={m}, "
        f"finished_at={m}, duration_ms={m}, attempts=attempts + 1 WHERE id={m} AND status='PENDING'"
    )
    if params:
        conn.exec_driver_sql(sql, params)


def pending_items(
    conn: Connection, dialect: Dialect, job_id: int, first: int, last: int
) -> list[tuple[Any, ...]]:
    m = dialect.mark
    sql = (
        f"SELECT id, seq, name, kind, data FROM items WHERE job_id={m} AND seq >= {m} AND seq <= {m} "
        f"AND status='PENDING' ORDER BY seq"
    )
    return list(conn.exec_driver_sql(sql, (job_id, first, last)).fetchall())
