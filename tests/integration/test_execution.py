"""Execution semantics on a real embedded server: kill -9, cancel, timeout, early stop, shutdown."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.helpers import (
    TERMINAL_STATUSES,
    Server,
    alive,
    assert_counters_match_rows,
    start_server,
    wait_for,
    wait_status,
)
from tests.helpers import submit_texts as submit

SMALL_CHUNKS = {"CONVEYOR_CHUNK_SIZE": "5"}


def item_rows(server: Server, job_id: int) -> list[tuple[int, str, int]]:
    """(seq, status, attempts) straight from the database: the ground truth the counters must match."""
    with sqlite3.connect(server.data_dir / "conveyor.db") as conn:
        return list(
            conn.execute("SELECT seq, status, attempts FROM items WHERE job_id=? ORDER BY seq", (job_id,))
        )


def assert_counters_match_items(server: Server, job: dict[str, Any]) -> None:
    assert_counters_match_rows(job, item_rows(server, job["id"]))


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_kill_9_of_a_worker_mid_chunk_loses_and_doubles_nothing(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(workers=2, extra_env=SMALL_CHUNKS)
    job = submit(server, 40, name="kill-9", config={"item_seconds": 0.1})
    with server.client() as client:
        wait_for(
            lambda: client.get(f"/api/v2/jobs/{job['id']}/").json()["completed"] >= 3,
            30,
            what="work to start",
        )
        workers = client.get("/api/v2/workers/pool/").json()
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        final = wait_status(client, job["id"], TERMINAL_STATUSES, timeout=90)
        assert final["status"] == "SUCCESS"
        assert (final["completed"], final["failed"], final["canceled"]) == (40, 0, 0)
        assert_counters_match_items(server, final)
        # Exactly once: each item was written back one time, none twice.
        assert [attempts for _, _, attempts in item_rows(server, job["id"])] == [1] * 40
        # The lease of the killed worker's chunk expired and the chunk was re-queued.
        logs = client.get(f"/api/v2/jobs/{job['id']}/logs/", params={"level": "WARNING", "limit": 100}).json()
        assert any("expired" in line["message"] for line in logs["results"])
        # The dead worker was replaced in its slot.
        replaced = wait_for(
            lambda: [
                w for w in client.get("/api/v2/workers/pool/").json() if w["restarts"] >= 1 and w["alive"]
            ],
            10,
            what="replacement worker",
        )
        assert replaced[0]["pid"] != victim
        assert replaced[0]["exit_codes"] == [-signal.SIGKILL]
        # The server is fully working afterwards: a new job runs on the pool, including the
        # replacement, and nothing the dead worker shared blocks the wake-ups.
        after = submit(server, 20, name="after-kill-9", config={"item_seconds": 0.01})
        assert wait_status(client, after["id"], {"SUCCESS", "FAILURE"}, timeout=60)["status"] == "SUCCESS"
        workers_after = client.get("/api/v2/workers/pool/", timeout=5).json()
        assert all(w["alive"] and w["ready"] for w in workers_after)
    # ...and it still stops cleanly: a killed worker used to wedge the graceful shutdown.
    assert server.stop(signal.SIGTERM, timeout=30) == 0


def test_cancel_stops_running_workers_and_keeps_counters_consistent(shared_server: Server) -> None:
    job = submit(shared_server, 200, name="cancel-running", config={"item_seconds": 0.05})
    with shared_server.client() as client:
        wait_for(
            lambda: client.get(f"/api/v2/jobs/{job['id']}/").json()["completed"] >= 4,
            30,
            what="work to start",
        )
        response = client.post(f"/api/v2/jobs/{job['id']}/cancel/")
        assert response.status_code == 200
        assert response.json()["status"] in ("CANCELING", "REVOKED")
        final = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
        finished = ts(final["finished_at"])
        canceled_at = next(
            e
            for e in client.get(f"/api/v2/jobs/{job['id']}/transitions/").json()
            if e["to_status"] in ("CANCELING", "REVOKED")
        )
        # Server-side clock: from the cancel request to REVOKED (all workers let go).
        assert (finished - ts(canceled_at["created_at"])).total_seconds() < 2.0
        assert final["canceled"] > 0
        assert_counters_match_items(shared_server, final)
        snapshot = item_rows(shared_server, job["id"])
        time.sleep(0.5)
        assert item_rows(shared_server, job["id"]) == snapshot  # no worker is still writing


def test_timeout_ends_the_job_timedout_and_keeps_finished_items(shared_server: Server) -> None:
    job = submit(shared_server, 100, name="timeout", timeout=1500, config={"item_seconds": 0.05})
    with shared_server.client() as client:
        final = wait_status(client, job["id"], {"TIMEDOUT", "SUCCESS", "FAILURE"}, timeout=20)
    assert final["status"] == "TIMEDOUT"
    assert final["timeout"] == 1500
    overdue = (ts(final["finished_at"]) - ts(final["submitted_at"])).total_seconds()
    assert 1.5 <= overdue < 2.5
    assert final["completed"] > 0 and final["canceled"] > 0
    assert_counters_match_items(shared_server, final)


def test_early_stop_when_failures_exceed_the_policy(shared_server: Server) -> None:
    job = submit(
        shared_server,
        300,
        name="early-stop",
        max_failed_ratio=0.1,
        config={"item_seconds": 0.005, "fail_rate": 1.0, "batch_size": 5},
    )
    with shared_server.client() as client:
        final = wait_status(client, job["id"], {"FAILURE", "SUCCESS"}, timeout=30)
        transitions = client.get(f"/api/v2/jobs/{job['id']}/transitions/").json()
    assert final["status"] == "FAILURE"
    assert final["failed"] > 30  # the policy allowed 30
    assert final["canceled"] > 0  # the rest was not ground through
    assert "stopping early" in transitions[-1]["cause"]
    # Item failures are reported as warnings, in the log and in the job's `errors`.
    with shared_server.client() as client:
        warnings = client.get(f"/api/v2/jobs/{job['id']}/logs/", params={"level": "WARNING"}).json()[
            "results"
        ]
        detail = client.get(f"/api/v2/jobs/{job['id']}/").json()
    assert warnings and all(line["level"] in ("WARNING", "ERROR") for line in warnings)
    assert any("item(s) failed: item-0: injected failure" in line["message"] for line in warnings)
    assert any("item(s) failed" in line for line in detail["progress"]["errors"])
    assert detail["logs"]["stderr"] == detail["progress"]["errors"]
    assert_counters_match_items(shared_server, final)


def test_progress_and_timings_while_running(shared_server: Server) -> None:
    job = submit(shared_server, 30, name="progress", config={"item_seconds": 0.05, "batch_size": 1})
    seen: list[float] = []
    with shared_server.client() as client:

        def partial() -> bool:
            current = client.get(f"/api/v2/jobs/{job['id']}/").json()
            seen.append(current["progress"]["summary"]["progress"])
            return current["status"] == "SUCCESS"

        wait_for(partial, 30, interval=0.05, what="job to finish")
        final = client.get(f"/api/v2/jobs/{job['id']}/").json()
    assert any(0 < p < 1 for p in seen), seen
    assert seen == sorted(seen)  # progress never goes backwards
    queue_ms = (ts(final["started_at"]) - ts(final["submitted_at"])).total_seconds() * 1000
    elapsed_ms = (ts(final["finished_at"]) - ts(final["started_at"])).total_seconds() * 1000
    assert abs(final["queue_time_ms"] - queue_ms) <= 1
    assert abs(final["elapsed_time_ms"] - elapsed_ms) <= 1
    assert abs(float(final["duration"]) * 1000 - elapsed_ms) <= 1


def test_sigterm_stops_cleanly_and_a_restart_finishes_the_job(server_factory: Callable[..., Server]) -> None:
    server = server_factory(workers=2, extra_env=SMALL_CHUNKS)
    job = submit(server, 60, name="shutdown", config={"item_seconds": 0.05})
    with server.client() as client:
        wait_for(
            lambda: client.get(f"/api/v2/jobs/{job['id']}/").json()["completed"] >= 5,
            30,
            what="work to start",
        )
        workers = [w["pid"] for w in client.get("/api/v2/workers/pool/").json()]
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    for pid in workers:  # the worker processes exited too
        assert not alive(pid)
    with sqlite3.connect(server.data_dir / "conveyor.db") as conn:
        leased = conn.execute("SELECT count(*) FROM chunks WHERE status='LEASED'").fetchone()[0]
    assert leased == 0  # unfinished chunks were handed back, not left to expire
    restarted = start_server(server.data_dir, workers=2, extra_env=SMALL_CHUNKS, key=server.key)
    try:
        with restarted.client() as client:
            final = wait_status(client, job["id"], {"SUCCESS", "FAILURE"}, timeout=60)
        assert final["status"] == "SUCCESS"
        assert_counters_match_items(restarted, final)
        assert [a for _, _, a in item_rows(restarted, job["id"])] == [1] * 60
    finally:
        restarted.stop()
