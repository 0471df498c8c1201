"""Shared pieces of the reliability suite: process lookup in /proc, item rows with their results,
submission and the long-variant switch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.helpers import TERMINAL_STATUSES, Server, assert_counters_match_rows, children_of, submit_texts

submit = submit_texts

FINISHED = TERMINAL_STATUSES

#: Longer and repeated variants of the reliability tests (bigger jobs, more kills, more rounds).
LONG = os.environ.get("CONVEYOR_TEST_LONG", "") not in ("", "0", "false")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def local_worker_pids(server: Server) -> list[int]:
    """The server's local worker processes (multiprocessing spawn children, not its resource tracker)."""
    return [pid for pid in children_of(server.pid) if "spawn_main" in cmdline(pid)]


def kill_9(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


ItemRow = tuple[int, str, int, Any]


def sqlite_items(data_dir: Path, job_id: int) -> list[ItemRow]:
    """(seq, status, attempts, result) straight from an embedded server's SQLite file."""
    with sqlite3.connect(data_dir / "conveyor.db") as conn:
        rows = conn.execute(
            "SELECT seq, status, attempts, result FROM items WHERE job_id=? ORDER BY seq", (job_id,)
        ).fetchall()
    return [
        (seq, status, attempts, json.loads(result) if result else None)
        for seq, status, attempts, result in rows
    ]


def engine_items(engine: sa.Engine, job_id: int) -> list[ItemRow]:
    """The same from any database (PostgreSQL in the distributed tests)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, status, attempts, result FROM items WHERE job_id = :j ORDER BY seq"),
            {"j": job_id},
        ).all()
    out: list[ItemRow] = []
    for seq, status, attempts, result in rows:
        out.append((seq, status, attempts, json.loads(result) if isinstance(result, str) else result))
    return out


def assert_exactly_once(job: dict[str, Any], rows: list[ItemRow], *, prefix: str = "item") -> None:
    """Counters equal the item rows, every item was written back once, and every successful item
    has its own result (``test-delay`` returns the byte size of the input ``f"{prefix} {seq}"``)."""
    assert_counters_match_rows(job, [(seq, status, attempts) for seq, status, attempts, _ in rows])
    assert [seq for seq, *_ in rows] == list(range(job["total"]))
    twice = [(seq, attempts) for seq, status, attempts, _ in rows if status != "CANCELED" and attempts != 1]
    assert not twice, f"items written back other than once: {twice[:10]}"
    lost = [
        (seq, result)
        for seq, status, _, result in rows
        if status == "SUCCESS" and result != {"bytes": len(f"{prefix} {seq}")}
    ]
    assert not lost, f"successful items without their result: {lost[:10]}"
