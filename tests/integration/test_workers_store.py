"""The worker registry's store verbs on both dialects: the throttled upsert, stop and restart,
the computed states and their filters, account scoping, ``live_for``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from conveyor.clock import utcnow
from conveyor.domain.workers import WorkerState
from conveyor.errors import InvalidInput
from conveyor.store import Store
from conveyor.store.tables import workers
from conveyor.store.workers import WorkerRow
from tests.helpers.backends import dialect_store

LEASE = 30.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with dialect_store(request.param, tmp_path, pool_size=4, lease_seconds=LEASE) as made:
        yield made


def by_name(store: Store, account_id: int | None = None) -> dict[str, WorkerRow]:
    return {w.name: w for w in store.workers.list(account_id)}


def age(store: Store, name: str, seconds: float) -> None:
    """Make a worker's last report ``seconds`` old."""
    with store.db.write() as conn:
        conn.execute(
            update(workers)
            .where(workers.c.name == name)
            .values(last_seen_at=utcnow() - timedelta(seconds=seconds))
        )


def test_seen_upserts_one_row_throttles_and_adds_up_items(store: Store) -> None:
    verb = store.workers
    assert verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"], job_id=None, started=True)
    assert verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"], job_id=7)  # job changed
    # Same job within the throttle: not written, but the items are kept for the next write.
    assert not verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"], job_id=7, items_done=10)
    assert not verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"], job_id=7, items_done=5)
    row = by_name(store)["h/local-0"]
    assert (row.current_job_id, row.items_done, row.state) == (7, 0, WorkerState.ACTIVE)
    assert verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"], job_id=None, items_done=1)
    row = by_name(store)["h/local-0"]
    assert (row.current_job_id, row.items_done, row.state) == (None, 16, WorkerState.IDLE)
    assert row.info == {} and row.pipelines == ["test-delay"] and row.account_id is None
    assert len(verb.list(None)) == 1


def test_pipelines_and_info_left_out_keep_the_rows(store: Store) -> None:
    account_id, _ = store.auth.ensure_defaults()
    verb = store.workers
    verb.seen("pull", "adc", host="gpu", account_id=account_id, job_id=None)
    assert (verb.list(account_id)[0].pipelines, verb.list(account_id)[0].info) == ([], {})
    verb.seen("pull", "adc", host="gpu", account_id=account_id, pipelines=["moths"], info={"a": 1}, job_id=4)
    verb.seen("pull", "adc", host="gpu", account_id=account_id, job_id=5, items_done=24)  # /tasks/, /result/
    row = verb.list(account_id)[0]
    assert (row.pipelines, row.info, row.current_job_id, row.items_done) == (["moths"], {"a": 1}, 5, 24)


def test_a_second_process_reporting_the_same_worker_updates_the_same_row(store: Store) -> None:
    other = Store(store.settings, pool_size=1)
    try:
        store.workers.seen("celery", "node@h/pool-0", host="h", pipelines=["a"], items_done=3)
        other.workers.seen("celery", "node@h/pool-0", host="h2", pipelines=["b"], items_done=4)
        rows = store.workers.list(None)
        assert [(r.host, r.pipelines, r.items_done) for r in rows] == [("h2", ["b"], 7)]
    finally:
        other.close()


def test_stopped_then_seen_again_starts_over(store: Store) -> None:
    verb = store.workers
    verb.seen("local", "h/local-1", host="h", pipelines=[], job_id=3, items_done=2, started=True)
    verb.seen("local", "h/local-1", host="h", pipelines=[], job_id=3, items_done=5)  # throttled: pending
    verb.stopped("local", "h/local-1")
    row = by_name(store)["h/local-1"]
    assert (row.state, row.items_done, row.current_job_id) == (WorkerState.STOPPED, 7, None)
    assert row.stopped_at is not None
    # Stopped beats silence: an old stopped row is not "lost".
    age(store, "h/local-1", LEASE * 10)
    assert by_name(store)["h/local-1"].state is WorkerState.STOPPED
    verb.seen("local", "h/local-1", host="h", pipelines=[], items_done=1)
    row = by_name(store)["h/local-1"]
    assert (row.state, row.items_done, row.stopped_at) == (WorkerState.IDLE, 1, None)
    assert utcnow() - row.started_at < timedelta(seconds=LEASE)


def test_silence_longer_than_the_kinds_lease_is_lost_and_filters_agree(store: Store) -> None:
    verb = store.workers
    verb.seen("local", "busy", host="h", pipelines=[], job_id=1)
    verb.seen("local", "idle", host="h", pipelines=[])
    verb.seen("local", "gone", host="h", pipelines=[], job_id=2)
    verb.seen("celery", "stopped", host="h", pipelines=[])
    verb.stopped("celery", "stopped")
    account_id, _ = store.auth.ensure_defaults()
    verb.seen("pull", "adc", host="gpu", pipelines=[], account_id=account_id)
    age(store, "gone", LEASE + 5)
    age(store, "adc", LEASE + 5)  # a pull worker's lease is Antenna's 300 s: still alive
    states = {w.name: w.state for w in verb.list(None)}
    assert states == {
        "busy": WorkerState.ACTIVE,
        "idle": WorkerState.IDLE,
        "gone": WorkerState.LOST,
        "stopped": WorkerState.STOPPED,
        "adc": WorkerState.IDLE,
    }
    for state in WorkerState:
        assert {w.name for w in verb.list(None, state=state)} == {n for n, s in states.items() if s is state}
    assert {w.name for w in verb.list(None, kind="celery")} == {"stopped"}
    age(store, "adc", 301)
    assert [w.name for w in verb.list(None, state="lost", kind="pull")] == ["adc"]


def test_accounts_see_the_deployments_workers_and_only_their_own(store: Store) -> None:
    mine, _ = store.auth.ensure_account("mine")
    theirs, _ = store.auth.ensure_account("theirs")
    verb = store.workers
    verb.seen("local", "h/local-0", host="h", pipelines=["test-delay"])
    # The same name in two accounts: two rows, neither overwrites the other.
    verb.seen("pull", "gpu01", host="gpu01", pipelines=["moths"], account_id=mine, key_id=1, info={"a": 1})
    verb.seen("pull", "gpu01", host="gpu01", pipelines=["birds"], account_id=theirs, key_id=2)
    verb.seen("http", "lab-box", host="lab", pipelines=["moths"], account_id=theirs)
    seen_by_mine = verb.list(mine)
    assert sorted((w.kind, w.name) for w in seen_by_mine) == [("local", "h/local-0"), ("pull", "gpu01")]
    assert next(w for w in seen_by_mine if w.kind == "pull").pipelines == ["moths"]
    assert sorted(w.name for w in verb.list(theirs)) == ["gpu01", "h/local-0", "lab-box"]
    assert len(verb.list(None)) == 4

    assert verb.live_for("moths", mine)
    assert verb.live_for("moths", mine, kinds=("pull",))
    assert not verb.live_for("birds", mine)  # only the other account's worker serves it
    assert verb.live_for("test-delay", mine)  # the deployment's
    assert not verb.live_for("test-delay", mine, kinds=("pull",))
    age(store, "gpu01", 301)
    assert not verb.live_for("moths", mine)  # lost
    verb.stopped("local", "h/local-0")
    assert not verb.live_for("test-delay", theirs)


def test_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        store.workers.seen("robot", "r", host="h", pipelines=[])
    assert store.workers.list(None) == []
