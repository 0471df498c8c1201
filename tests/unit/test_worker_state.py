"""The worker registry's state of a row: stopped beats silence, silence beats the last job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain.workers import WorkerState, lost_after, worker_state

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stopped", "silent_for", "job", "expected"),
    [
        (False, 0, 12, WorkerState.ACTIVE),
        (False, 0, None, WorkerState.IDLE),
        (False, 29.9, 12, WorkerState.ACTIVE),  # within the lease
        (False, 30, None, WorkerState.IDLE),  # exactly a lease: not yet lost
        (False, 30.1, 12, WorkerState.LOST),  # its job went back to the queue: lost, not active
        (False, 3600, None, WorkerState.LOST),
        (True, 0, None, WorkerState.STOPPED),
        (True, 3600, 12, WorkerState.STOPPED),  # a clean exit is never "lost"
    ],
)
def test_worker_state(stopped: bool, silent_for: float, job: int | None, expected: WorkerState) -> None:
    state = worker_state(
        stopped_at=NOW - timedelta(seconds=silent_for) if stopped else None,
        last_seen_at=NOW - timedelta(seconds=silent_for),
        current_job_id=job,
        now=NOW,
        lost_after_seconds=30,
    )
    assert state is expected


def test_each_kind_is_lost_after_its_own_lease() -> None:
    leases = {"local": 2.0, "celery": 2.0, "http": 2.0, "pull": 300.0}
    assert lost_after("pull", leases) == 300.0
    assert lost_after("local", leases) == 2.0
    assert lost_after("someday", leases) == 300.0  # an unknown kind gets the most patient lease
