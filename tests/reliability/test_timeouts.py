"""Timeouts under load: jobs with timeouts from 200 ms to 5 s end TIMEDOUT within timeout + 1 s,
whether they were running or still queued behind other work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.helpers import Server, wait_status
from tests.helpers.reliability import FINISHED, LONG, assert_exactly_once, sqlite_items, submit

TIMEOUTS_MS = [200, 350, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000]
SLACK_SECONDS = 1.0


def test_timeouts_from_200_ms_to_5_s_end_timedout_within_a_second_under_load(
    server_factory: Callable[..., Server],
) -> None:
    workers = 4
    server = server_factory(workers=workers, extra_env={"CONVEYOR_CHUNK_SIZE": "10"})
    rounds = 3 if LONG else 1
    for round_ in range(rounds):
        # Timed jobs (longest timeout first) interleaved with jobs without a timeout, each with far
        # more work than its timeout allows: the first ones run, the later ones wait queued behind
        # the load, and each must time out either way.
        timed: list[dict[str, Any]] = []
        load: list[dict[str, Any]] = []
        for ms in sorted(TIMEOUTS_MS, reverse=True):
            load.append(submit(server, 40, name=f"load-{round_}-{ms}", config={"item_seconds": 0.05}))
            timed.append(
                submit(server, 200, name=f"timeout-{round_}-{ms}", timeout=ms, config={"item_seconds": 0.2})
            )
        with server.client() as client:
            finals = [wait_status(client, job["id"], FINISHED, timeout=30) for job in timed]
            for job in load:
                client.post(f"/api/v2/jobs/{job['id']}/cancel/")
        overdue: dict[int, float] = {}
        for job, final in zip(timed, finals, strict=True):
            assert final["status"] == "TIMEDOUT", final
            assert final["timeout"] == job["timeout"]
            took = (
                datetime.fromisoformat(final["finished_at"]) - datetime.fromisoformat(final["submitted_at"])
            ).total_seconds()
            limit = final["timeout"] / 1000
            assert took >= limit, (final["timeout"], took)  # never early
            if took > limit + SLACK_SECONDS:
                overdue[final["timeout"]] = round(took, 3)
            assert_exactly_once(final, sqlite_items(server.data_dir, final["id"]))
        assert not overdue, f"timed out later than timeout + {SLACK_SECONDS}s: {overdue}"
        # Both paths were taken: jobs that timed out while running, and jobs still queued.
        assert any(final["completed"] > 0 for final in finals)
        assert any(final["started_at"] is None for final in finals)
        assert all(final["canceled"] > 0 for final in finals)
