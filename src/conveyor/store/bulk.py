"""Hot-path statements run straight on the DB-API driver.

Writing back a chunk and inserting a job's items touch thousands of rows per call; going
through SQLAlchemy's per-row parameter and type processing cost more than SQLite itself
(and ran while holding SQLite's single write lock). These statements build their
parameters once, outside the transaction where possible, and hand plain tuples to the
driver's ``executemany`` (SQLite) or to PostgreSQL's bulk paths (``COPY`` for inserts, one
``UPDATE … FROM unnest(arrays)`` for a chunk's results: one round trip instead of one per row).
Values are stored exactly as the SQLAlchemy column types in ``tables.py`` store them, so reads
through SQLAlchemy see no difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.clock import ms_between
from conveyor.errors import InvalidInput


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


# The order of the tuples insert_items builds; used by both the INSERT and the COPY.
ITEM_COLUMNS = (
    "job_id",
    "seq",
    "name",
    "kind",
    "byte_size",
    "data",
    "status",
    "attempts",
    "source",
    "ref",
    "sha256",
    "error",
)


def item_insert_sql(dialect: Dialect) -> str:
    marks = ", ".join([dialect.mark] * len(ITEM_COLUMNS))
    return f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({marks})"


def insert_items(conn: Connection, dialect: Dialect, job_id: int, rows: Sequence[dict[str, Any]]) -> None:
    params = [
        (
            job_id,
            r["seq"],
            r["name"],
            r["kind"],
            r["byte_size"],
            r.get("data"),
            r["status"],
            r.get("attempts", 0),
            r.get("source"),
            r.get("ref"),
            r.get("sha256"),
            r.get("error"),
        )
        for r in rows
    ]
    if not params:
        return
    if dialect.sqlite:
        conn.exec_driver_sql(item_insert_sql(dialect), params)
        return
    import psycopg

    cursor = conn.connection.cursor()
    try:
        with cursor.copy(f"COPY items ({', '.join(ITEM_COLUMNS)}) FROM STDIN") as copy:
            for row in params:
                copy.write_row(row)
    except psycopg.DataError as exc:  # e.g. a NUL character in an item name; the transaction fails whole
        raise InvalidInput(f"An input cannot be stored: {str(exc).splitlines()[0]}.") from None
    finally:
        cursor.close()


def item_result_params(dialect: Dialect, outcomes: Sequence[Any], now: datetime) -> Any:
    """Parameters for ``update_items``; built before the write transaction starts.

    SQLite: one tuple per item for ``executemany``. PostgreSQL: the whole chunk as one JSON
    document (``json.dumps`` is C code; psycopg's array dumping is not), unpacked by the server.
    """
    times: dict[datetime, Any] = {}

    def encode(value: datetime) -> Any:
        if value not in times:
            times[value] = dialect.time(value) if dialect.sqlite else value.isoformat()
        return times[value]

    if not dialect.sqlite:
        records = []
        for o in outcomes:
            started = o.started_at or now
            finished = o.finished_at or now
            record = {
                "id": o.id,
                "status": "SUCCESS" if o.ok else "FAILURE",
                "started_at": encode(started),
                "finished_at": encode(finished),
                "duration_ms": ms_between(started, finished),
            }
            # An absent key is SQL NULL; a JSON null would be stored as the jsonb value 'null'.
            if o.result is not None:
                record["result"] = o.result
            if o.error is not None:
                record["error"] = o.error
            if o.byte_size is not None:
                record["byte_size"] = o.byte_size
            records.append(record)
        return json.dumps(records) if records else None
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
                o.byte_size,
                o.id,
            )
        )
    return params


# PostgreSQL: every result of a chunk in one statement, unpacked from one JSON parameter.
_PG_UPDATE_ITEMS = (
    "UPDATE items AS i SET status = v.status, result = v.result, error = v.error, "
    "started_at = v.started_at, finished_at = v.finished_at, duration_ms = v.duration_ms, "
    "byte_size = COALESCE(v.byte_size, i.byte_size), attempts = i.attempts + 1 "
    "FROM jsonb_to_recordset(CAST(%s AS JSONB)) AS v(id bigint, status text, result jsonb, error text, "
    "started_at timestamptz, finished_at timestamptz, duration_ms int, byte_size int) "
    "WHERE i.id = v.id AND i.status = 'PENDING' AND i.job_id = %s AND i.seq >= %s AND i.seq <= %s "
    "RETURNING i.id"
)
#: Ids per ``IN (...)`` list on SQLite (its default limit of bound parameters is 999 on old builds).
_SQLITE_IDS_PER_QUERY = 900


def update_items(
    conn: Connection, dialect: Dialect, params: Any, job_id: int, first: int, last: int
) -> set[int]:
    """Write item results, only over items still PENDING in the chunk's seq range of its job (an
    id from elsewhere is ignored); the ids actually written.

    The caller holds the job's row lock, so the answer is exact: a results post replayed after
    a lost response, or a late one after another worker wrote the items, writes (and counts)
    nothing twice.
    """
    if not params:
        return set()
    if not dialect.sqlite:
        return set(conn.exec_driver_sql(_PG_UPDATE_ITEMS, (params, job_id, first, last)).scalars().all())
    m = dialect.mark
    ids = [p[-1] for p in params]
    pending: set[int] = set()
    for start in range(0, len(ids), _SQLITE_IDS_PER_QUERY):
        part = ids[start : start + _SQLITE_IDS_PER_QUERY]
        marks = ",".join(m for _ in part)
        found = conn.exec_driver_sql(
            f"SELECT id FROM items WHERE status='PENDING' AND job_id={m} AND seq >= {m} AND seq <= {m} "
            f"AND id IN ({marks})",
            (job_id, first, last, *part),
        )
        pending.update(r[0] for r in found)
    todo = [p for p in params if p[-1] in pending]
    if todo:
        sql = (
            f"UPDATE items SET status={m}, result={dialect.json_mark}, error={m}, started_at={m}, "
            f"finished_at={m}, duration_ms={m}, byte_size=COALESCE({m}, byte_size), attempts=attempts + 1 "
            f"WHERE id={m} AND status='PENDING'"
        )
        conn.exec_driver_sql(sql, todo)
    return pending


def pending_items(
    conn: Connection, dialect: Dialect, job_id: int, first: int, last: int
) -> list[tuple[Any, ...]]:
    m = dialect.mark
    sql = (
        f"SELECT id, seq, name, kind, data, ref FROM items WHERE job_id={m} AND seq >= {m} AND seq <= {m} "
        f"AND status='PENDING' ORDER BY seq"
    )
    return list(conn.exec_driver_sql(sql, (job_id, first, last)).fetchall())
