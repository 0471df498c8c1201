"""The store's contract, run against every database backend (SQLite and PostgreSQL).

These tests drive the repositories the way workers and the API do, with real concurrent
connections, to prove the guarantees the rest of Conveyor stands on: guarded transitions,
lease-guarded write-backs (exactly-once counting), safe concurrent claims.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.access import Scope
from conveyor.domain.status import ChunkKind, JobStatus
from conveyor.domain.work import Claim, ItemOutcome
from conveyor.errors import Conflict, NotFound
from conveyor.store import Store, lifecycle
from conveyor.store.jobs import NewJob
from conveyor.store.tables import chunks, items, job_events, job_logs, jobs
from tests.helpers.backends import dialect_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with dialect_store(request.param, tmp_path, pool_size=12, chunk_size=5) as made:
        yield made


def new_job(store: Store, n: int, *, start: bool = True, **values: Any) -> tuple[int, Scope]:
    account_id, project_id = store.auth.ensure_defaults()
    pipeline_id = store.pipelines.latest("test-delay")["id"]
    row = {
        "name": "contract",
        "account_id": account_id,
        "project_id": project_id,
        "pipeline_id": pipeline_id,
        "job_type": "ml",
        "dispatch_mode": "internal",
        "delay": 0.0,
        "limit": None,
        "shuffle": False,
        "timeout_ms": None,
        "explain": False,
        "max_failed_ratio": 0.5,
        "config": {},
        "input_summary": {},
        "input_byte_amount": n,
        "submitted_by": "test",
    }
    row.update(values)
    item_rows = [
        {
            "seq": i,
            "name": f"i{i}",
            "kind": "text",
            "byte_size": 1,
            "data": b"x",
            "status": "PENDING",
            "attempts": 0,
        }
        for i in range(n)
    ]
    job_id, _ = store.jobs.create(NewJob(**row), item_rows, start=start)
    return job_id, Scope(account_id)


def outcomes(store: Store, claim: Claim, ok: bool = True) -> list[ItemOutcome]:
    return [
        ItemOutcome(i.id, ok, {"v": i.seq} if ok else None, None if ok else "boom")
        for i in store.chunks.pending_items(claim)
    ]


def status_of(store: Store, job_id: int) -> dict[str, Any]:
    with store.db.read() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())


def test_run_splits_items_into_chunks_and_only_once(store: Store) -> None:
    job_id, scope = new_job(store, 12, start=False)
    queued = store.jobs.run(scope, job_id)
    assert len(queued.chunk_ids) == 3
    with pytest.raises(Conflict):
        store.jobs.run(scope, job_id)
    claims = [store.chunks.claim("w", 30) for _ in range(4)]
    assert [c.first_seq if c else None for c in claims] == [0, 5, 10, None]
    assert [c.last_seq for c in claims if c] == [4, 9, 11]


@pytest.mark.parametrize("values", [{}, {"delay": 1.5, "timeout_ms": 60_000}])
def test_a_job_submitted_started_is_written_as_created_then_run(store: Store, values: dict[str, Any]) -> None:
    """``create(start=True)`` writes the job PENDING in one go; what it leaves must be what
    creating it and then running it leaves: the row, the chunks, both events, the log lines."""
    one, scope = new_job(store, 12, start=True, **values)
    other, _ = new_job(store, 12, start=False, **values)
    store.jobs.run(scope, other)

    def written(job_id: int) -> dict[str, Any]:
        row = status_of(store, job_id)
        with store.db.read() as conn:
            events = conn.execute(
                select(job_events.c.from_status, job_events.c.to_status, job_events.c.cause)
                .where(job_events.c.job_id == job_id)
                .order_by(job_events.c.id)
            ).all()
            logs = conn.execute(
                select(job_logs.c.level, job_logs.c.message)
                .where(job_logs.c.job_id == job_id)
                .order_by(job_logs.c.id)
            ).all()
            made = conn.execute(
                select(chunks.c.kind, chunks.c.first_seq, chunks.c.last_seq, chunks.c.status)
                .where(chunks.c.job_id == job_id)
                .order_by(chunks.c.id)
            ).all()
        deadline = row["deadline_at"] - row["submitted_at"] if row["deadline_at"] else None
        kept = {k: v for k, v in row.items() if k in ("status", "total", "pending", "failed", "delay")}
        return {
            **kept,
            "deadline_after": deadline,
            "events": [tuple(e) for e in events],
            "logs": [
                (level, message.replace(f"#{job_id} ", "#N ").replace(f"job {job_id} ", "job N "))
                for level, message in logs
            ],
            "chunks": [tuple(c) for c in made],
        }

    started, run = written(one), written(other)
    assert started["status"] == "PENDING" and started["pending"] == 12
    assert len(started["chunks"]) == (4 if values else 3)
    assert started["events"] == [(None, "CREATED", "submitted"), ("CREATED", "PENDING", "start_now")]
    assert run["events"][-1] == ("CREATED", "PENDING", "run requested")
    run["events"][-1] = ("CREATED", "PENDING", "start_now")
    run["logs"] = [(level, m.replace("(run requested)", "(start_now)")) for level, m in run["logs"]]
    assert started == run


def test_concurrent_claims_hand_each_chunk_to_exactly_one_worker(store: Store) -> None:
    _job_id, _ = new_job(store, 200)  # 40 chunks
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (claim := store.chunks.claim(name, 30)) is not None:
            with lock:
                taken.append(claim.chunk_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 40
    assert len(set(taken)) == 40


def test_write_back_counts_items_and_finishes_the_job(store: Store) -> None:
    job_id, _ = new_job(store, 7)
    while (claim := store.chunks.claim("w", 30)) is not None:
        store.chunks.start_job(job_id)
        wrote = store.chunks.write_back(claim, outcomes(store, claim), [], lease_seconds=30, complete=True)
        assert wrote.held
    job = status_of(store, job_id)
    assert job["status"] == "SUCCESS"
    assert (job["completed"], job["failed"], job["pending"], job["canceled"]) == (7, 0, 0, 0)
    assert job["queue_time_ms"] is not None and job["elapsed_time_ms"] is not None
    with store.db.read() as conn:
        attempts = conn.execute(select(items.c.attempts).where(items.c.job_id == job_id)).scalars().all()
    assert attempts == [1] * 7


def test_a_worker_that_lost_its_lease_cannot_write(store: Store) -> None:
    job_id, _ = new_job(store, 5)
    slow = store.chunks.claim("slow", 0.2)
    assert slow is not None
    store.chunks.start_job(job_id)
    # The slow worker writes two items, then stalls past its lease.
    first_two = outcomes(store, slow)[:2]
    assert store.chunks.write_back(slow, first_two, [], lease_seconds=0.2, complete=False).held
    time.sleep(0.4)
    assert store.sweeping.reap_expired() == [slow.chunk_id]
    fresh = store.chunks.claim("fresh", 30)
    assert fresh is not None and fresh.chunk_id == slow.chunk_id and fresh.token != slow.token
    # Only the three unwritten items are redelivered.
    assert [i.seq for i in store.chunks.pending_items(fresh)] == [2, 3, 4]
    late = store.chunks.write_back(slow, outcomes(store, slow), [], lease_seconds=30, complete=True)
    assert not late.held
    assert status_of(store, job_id)["completed"] == 2
    assert store.chunks.write_back(fresh, outcomes(store, fresh), [], lease_seconds=30, complete=True).held
    job = status_of(store, job_id)
    assert (job["status"], job["completed"], job["pending"]) == ("SUCCESS", 5, 0)
    with store.db.read() as conn:
        attempts = conn.execute(select(items.c.attempts).where(items.c.job_id == job_id)).scalars().all()
    assert attempts == [1] * 5


def test_concurrent_terminal_transitions_have_one_winner(store: Store) -> None:
    job_id, _ = new_job(store, 3)
    store.chunks.claim("w", 30)
    store.chunks.start_job(job_id)
    targets = [JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.TIMEDOUT] * 4
    barrier = threading.Barrier(len(targets))
    winners: list[JobStatus] = []
    lock = threading.Lock()

    def attempt(target: JobStatus) -> None:
        barrier.wait()
        with store.db.write() as conn:
            done = lifecycle.finish(conn, job_id, target, "race")
        if done is not None:
            with lock:
                winners.append(done.target)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    job = status_of(store, job_id)
    assert job["status"] == winners[0]
    with store.db.read() as conn:
        terminal_events = conn.execute(
            select(func.count())
            .select_from(job_events)
            .where(
                job_events.c.job_id == job_id, job_events.c.to_status.in_(["SUCCESS", "FAILURE", "TIMEDOUT"])
            )
        ).scalar_one()
    assert terminal_events == 1
    assert job["completed"] + job["failed"] + job["canceled"] == job["total"]


def test_late_writes_never_move_a_terminal_job_back(store: Store) -> None:
    job_id, scope = new_job(store, 2)
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    store.chunks.start_job(job_id)
    store.chunks.write_back(claim, outcomes(store, claim), [], lease_seconds=30, complete=True)
    assert status_of(store, job_id)["status"] == "SUCCESS"
    with store.db.write() as conn:
        for target in (
            JobStatus.PENDING,
            JobStatus.STARTED,
            JobStatus.CANCELING,
            JobStatus.FAILURE,
            JobStatus.REVOKED,
            JobStatus.TIMEDOUT,
        ):
            assert lifecycle.transition(conn, job_id, target, "late write") is None
    store.chunks.start_job(job_id)  # a duplicate "first chunk" message
    with pytest.raises(Conflict):
        store.jobs.cancel(scope, job_id)
    assert status_of(store, job_id)["status"] == "SUCCESS"


def test_cancel_drops_queued_work_and_revokes_when_the_worker_lets_go(store: Store) -> None:
    job_id, scope = new_job(store, 15)
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    store.chunks.start_job(job_id)
    first = outcomes(store, claim)[:2]
    store.chunks.write_back(claim, first, [], lease_seconds=30, complete=False)
    assert store.jobs.cancel(scope, job_id) == JobStatus.CANCELING
    assert store.chunks.claim("other", 30) is None  # queued chunks were dropped
    # The worker notices, writes what it finished, and releases its chunk.
    rest = outcomes(store, claim)[:1]
    assert (
        store.chunks.write_back(claim, rest, [], lease_seconds=30, complete=False).job_status == "CANCELING"
    )
    store.chunks.release(claim, requeue=False)
    job = status_of(store, job_id)
    assert job["status"] == "REVOKED"
    assert (job["completed"], job["failed"], job["canceled"], job["pending"]) == (3, 0, 12, 0)


def test_cancel_of_a_queued_job_with_no_worker_revokes_at_once(store: Store) -> None:
    job_id, scope = new_job(store, 4)
    assert store.jobs.cancel(scope, job_id) == JobStatus.REVOKED
    assert status_of(store, job_id)["canceled"] == 4


def test_early_stop_when_the_failure_policy_cannot_be_met(store: Store) -> None:
    job_id, _ = new_job(store, 20, max_failed_ratio=0.2)  # at most 4 failures allowed
    first = store.chunks.claim("w", 30)
    assert first is not None
    store.chunks.start_job(job_id)
    wrote = store.chunks.write_back(
        first, outcomes(store, first, ok=False), [], lease_seconds=30, complete=True
    )
    assert wrote.job_status == "FAILURE"
    job = status_of(store, job_id)
    assert (job["failed"], job["canceled"], job["pending"], job["completed"]) == (5, 15, 0, 0)
    assert store.chunks.claim("w", 30) is None


def test_retry_requeues_only_failed_items(store: Store) -> None:
    job_id, scope = new_job(store, 10, max_failed_ratio=1.0)
    while (claim := store.chunks.claim("w", 30)) is not None:
        store.chunks.start_job(job_id)
        done = [
            ItemOutcome(i.id, i.seq % 3 != 0, None, None if i.seq % 3 else "bad")
            for i in store.chunks.pending_items(claim)
        ]
        store.chunks.write_back(claim, done, [], lease_seconds=30, complete=True)
    assert status_of(store, job_id)["failed"] == 4  # seqs 0, 3, 6, 9
    queued = store.jobs.retry(scope, job_id)
    assert len(queued.chunk_ids) == 1
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    assert [i.seq for i in store.chunks.pending_items(claim)] == [0, 3, 6, 9]
    store.chunks.write_back(claim, outcomes(store, claim), [], lease_seconds=30, complete=True)
    job = status_of(store, job_id)
    assert (job["status"], job["completed"], job["failed"]) == ("SUCCESS", 10, 0)
    with pytest.raises(Conflict):
        store.jobs.retry(scope, job_id)


def test_timeouts_end_the_job_and_keep_finished_items(store: Store) -> None:
    job_id, _ = new_job(store, 10, timeout_ms=150)
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    store.chunks.start_job(job_id)
    store.chunks.write_back(claim, outcomes(store, claim)[:3], [], lease_seconds=30, complete=False)
    assert store.sweeping.time_out_jobs() == []
    time.sleep(0.2)
    assert store.sweeping.time_out_jobs() == [job_id]
    job = status_of(store, job_id)
    assert (job["status"], job["completed"], job["canceled"], job["pending"]) == ("TIMEDOUT", 3, 7, 0)
    assert not store.chunks.write_back(
        claim, outcomes(store, claim), [], lease_seconds=30, complete=True
    ).held


def test_history_counts_are_exact_up_to_the_limit_then_marked_estimates(store: Store) -> None:
    from conveyor.store.history import HistoryQuery, HistoryRepository

    for i in range(12):
        new_job(store, 1, start=False, name=f"count-{'odd' if i % 2 else 'even'}-{i}")
    store.db.optimize()
    if not store.db.is_sqlite:
        with store.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
    history = HistoryRepository(store.db, exact_count_limit=8, count_cache_seconds=3600)
    scope = Scope(store.auth.ensure_defaults()[0])

    narrow = history.page(scope, HistoryQuery(search="odd", limit=2))
    assert (narrow.count, narrow.count_exact) == (6, True)
    wide = history.page(scope, HistoryQuery(limit=2))
    assert wide.count_exact is False
    assert wide.count >= 9  # never below "more than the exact limit"
    if store.db.is_sqlite:
        assert wide.count == 12  # SQLite counts once, exactly, then caches per filter
        new_job(store, 1, start=False, name="count-late")
        assert history.page(scope, HistoryQuery(limit=2)).count == 12  # cached
        fresh = HistoryRepository(store.db, exact_count_limit=8, count_cache_seconds=0)
        assert fresh.page(scope, HistoryQuery(limit=2)).count == 13
    else:
        assert wide.count <= 100  # the planner's estimate, from fresh statistics
    # The rows themselves never depend on the count.
    assert len(wide.rows) == 2 and wide.next_cursor is not None


def test_item_bytes_names_and_results_round_trip_exactly(store: Store) -> None:
    """The bulk paths (COPY / unnest on PostgreSQL, executemany on SQLite) lose nothing."""
    payloads = [bytes(range(256)), b"", b"\\x00\\N\t\n\r", "naïve ☃".encode()]
    names = ["tab\there", "new\nline", "back\\slash \\N", "ünï☃"]
    job_id, scope = new_job(store, 0, start=False)
    with store.db.write() as conn:
        from conveyor.store import bulk

        bulk.insert_items(
            conn,
            bulk.Dialect(store.db.dialect),
            job_id,
            [
                {
                    "seq": i,
                    "name": n,
                    "kind": "base64",
                    "byte_size": len(p),
                    "data": p,
                    "status": "PENDING",
                    "source": f"s3://bucket/{n}" if i % 2 else None,
                }
                for i, (n, p) in enumerate(zip(names, payloads, strict=True))
            ],
        )
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(total=4, pending=4))
    store.jobs.run(scope, job_id)
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    pending = store.chunks.pending_items(claim)
    assert [(i.name, i.data) for i in pending] == list(zip(names, payloads, strict=True))
    results: list[Any] = [{"text": 'tab\t"quote" ☃'}, None, [1, 2.5, None], {"nested": {"k": []}}]
    outcomes = [
        ItemOutcome(i.id, ok, result if ok else None, None if ok else "failed: \\N\ttab")
        for i, result, ok in zip(pending, results, [True, False, True, True], strict=True)
    ]
    assert store.chunks.write_back(claim, outcomes, [], lease_seconds=30, complete=True).held
    with store.db.read() as conn:
        sources = conn.execute(
            select(items.c.source).where(items.c.job_id == job_id).order_by(items.c.seq)
        ).scalars()
        assert list(sources) == [None, f"s3://bucket/{names[1]}", None, f"s3://bucket/{names[3]}"]
        rows = conn.execute(
            select(items.c.status, items.c.result, items.c.error, items.c.attempts)
            .where(items.c.job_id == job_id)
            .order_by(items.c.seq)
        ).all()
    with store.db.read() as conn:
        nulls = conn.execute(
            select(items.c.seq).where(
                items.c.job_id == job_id, items.c.result.is_(None), items.c.error.is_(None)
            )
        ).scalars()
        assert list(nulls) == []  # a missing result is SQL NULL, not a JSON null: checked below
        failed_null = conn.execute(
            select(func.count()).where(items.c.job_id == job_id, items.c.seq == 1, items.c.result.is_(None))
        ).scalar_one()
    assert failed_null == 1
    assert [tuple(r) for r in rows] == [
        ("SUCCESS", results[0], None, 1),
        ("FAILURE", None, "failed: \\N\ttab", 1),
        ("SUCCESS", results[2], None, 1),
        ("SUCCESS", results[3], None, 1),
    ]


def test_artifacts_are_written_with_the_write_back_and_only_under_the_lease(store: Store) -> None:
    from conveyor.domain.artifacts import Artifact, ArtifactKind
    from conveyor.errors import NotFound

    job_id, scope = new_job(store, 3)
    claim = store.chunks.claim("w", 30)
    assert claim is not None
    store.chunks.start_job(job_id)
    pending = store.chunks.pending_items(claim)
    picture = bytes(range(256)) * 4  # binary, with NUL bytes: stored as a blob on every backend
    made = [
        ItemOutcome(
            i.id, True, {"v": i.seq}, artifacts=(Artifact(ArtifactKind.SAMPLE, "image/jpeg", picture),)
        )
        for i in pending
    ]
    late = Claim(claim.chunk_id, claim.job_id, claim.kind, claim.first_seq, claim.last_seq, "stolen", 1)
    assert not store.chunks.write_back(late, made, [], lease_seconds=30, complete=True).held
    with pytest.raises(NotFound, match="has no sample"):
        store.artifacts.get(scope, job_id, pending[0].id, ArtifactKind.SAMPLE)  # nothing half-written
    assert store.chunks.write_back(claim, made, [], lease_seconds=30, complete=True).held
    found = store.artifacts.get(scope, job_id, pending[0].id, ArtifactKind.SAMPLE)
    assert (found.media_type, found.data) == ("image/jpeg", picture)
    with pytest.raises(NotFound, match="has no explanation"):
        store.artifacts.get(scope, job_id, pending[0].id, ArtifactKind.EXPLANATION)
    with pytest.raises(NotFound, match=f"Job {job_id} not found"):
        store.artifacts.get(
            Scope(scope.account_id, frozenset({-1})), job_id, pending[0].id, ArtifactKind.SAMPLE
        )
    other_job, _ = new_job(store, 1, start=False)
    with pytest.raises(NotFound, match="Item"):
        store.artifacts.get(scope, other_job, pending[0].id, ArtifactKind.SAMPLE)


def test_a_replayed_or_foreign_write_back_changes_nothing(store: Store) -> None:
    """Counters count the rows a write-back moved out of PENDING, not the outcomes it was sent:
    an HTTP worker's results post replayed after a lost answer, or an id of another chunk or job,
    counts nothing."""
    job_id, _ = new_job(store, 5)
    other_id, _ = new_job(store, 5)
    claim = store.chunks.claim("w", 30)
    assert claim is not None and claim.job_id == job_id
    done = outcomes(store, claim)
    with store.db.read() as conn:
        other_item = conn.execute(select(items.c.id).where(items.c.job_id == other_id).limit(1)).scalar_one()
    for _ in range(3):
        wrote = store.chunks.write_back(
            claim, [*done[:2], ItemOutcome(other_item, True, {"x": 1})], [], lease_seconds=30, complete=False
        )
        assert wrote.held
    job = status_of(store, job_id)
    assert (job["completed"], job["failed"], job["pending"]) == (2, 0, 3)
    assert status_of(store, other_id)["pending"] == 5
    assert (
        store.chunks.write_back(claim, done, [], lease_seconds=30, complete=True).job_status
        == JobStatus.SUCCESS
    )
    assert status_of(store, job_id)["completed"] == 5


def test_claims_narrowed_by_kind_and_scope(store: Store) -> None:
    job_id, scope = new_job(store, 3)
    assert store.chunks.claim("w", 30, kinds=(ChunkKind.DELAY,)) is None
    assert store.chunks.claim("w", 30, scope=Scope(scope.account_id + 1000)) is None
    assert store.chunks.claim("w", 30, scope=Scope(scope.account_id, frozenset({-1}))) is None
    claim = store.chunks.claim("w", 30, kinds=(ChunkKind.ITEMS,), scope=scope)
    assert claim is not None and claim.job_id == job_id
    held = store.chunks.held(claim.chunk_id, claim.token, scope)
    assert held is not None and (held.first_seq, held.last_seq) == (claim.first_seq, claim.last_seq)
    assert store.chunks.held(claim.chunk_id, claim.token, Scope(scope.account_id + 1000)) is None


def test_job_detail_reads_the_newest_logs_and_first_inputs_in_one_statement(store: Store) -> None:
    """The detail folds its recent log lines and first input descriptors into the job's row
    (one round trip): they come back as the separate reads gave them, on both backends."""
    job_id, scope = new_job(store, 7, start=False, name="detail")
    messages = ["plain", 'quote " and \\ backslash', "unicode é 漢字", "line\nbreak"]
    with store.db.write() as conn:
        for index, message in enumerate(messages):
            lifecycle.add_log(conn, job_id, "ERROR" if index == 1 else "INFO", message)

    detail = store.jobs.detail(scope, job_id, log_lines=3, inputs=5)
    with store.db.read() as conn:
        expected_logs = [
            dict(r)
            for r in conn.execute(
                select(job_logs).where(job_logs.c.job_id == job_id).order_by(job_logs.c.id.desc()).limit(3)
            ).mappings()
        ]
    assert [dict(r) for r in detail.logs] == expected_logs
    assert [r["message"] for r in detail.logs] == messages[:0:-1]
    assert all(r["created_at"].tzinfo is not None for r in detail.logs)
    assert [(r["seq"], r["name"], r["kind"], r["byte_size"]) for r in detail.inputs] == [
        (i, f"i{i}", "text", 1) for i in range(5)
    ]
    assert detail.row["name"] == "detail" and detail.row["id"] == job_id

    by_uuid = store.jobs.detail(scope, uuid=detail.row["uuid"])  # no logs or inputs asked
    assert by_uuid.row["id"] == job_id
    assert by_uuid.logs == [] and by_uuid.inputs == []
    project_id = detail.row["project_id"]
    narrowed = store.jobs.detail(Scope(scope.account_id, frozenset({project_id})), job_id, log_lines=1)
    assert [dict(r) for r in narrowed.logs] == expected_logs[:1]
    with pytest.raises(NotFound):
        store.jobs.detail(Scope(scope.account_id, frozenset({project_id + 1})), job_id, log_lines=3)
    with pytest.raises(NotFound):
        store.jobs.detail(Scope(scope.account_id + 999), job_id, log_lines=3)


def test_job_detail_on_the_driver_connection_matches_sqlalchemy_on_every_column(store: Store) -> None:
    """The account-wide detail runs on the pooled driver connection (store/rawread.py): every
    column, its value and its Python type, as the same select gives through SQLAlchemy."""
    job_id, scope = new_job(
        store, 3, name="raw é", max_failed_ratio=0.25, config={"a": [1, 2]}, timeout_ms=1500
    )
    with store.db.write() as conn:
        lifecycle.add_log(conn, job_id, "WARNING", "careful")
    row = store.jobs.detail(scope, job_id).row
    for by, key in (("id", job_id), ("uuid", row["uuid"])):
        params = {"key": key, "account_id": scope.account_id, "lines": 5, "inputs": 2}
        with store.db.read() as conn:
            expected = dict(conn.execute(store.jobs.detail_statements[by, False], params).mappings().one())
        got = store.jobs.detail_reads[by].fetch(params)
        assert got is not None
        assert list(got) == list(expected)
        assert {k: (v, type(v)) for k, v in got.items()} == {k: (v, type(v)) for k, v in expected.items()}
        assert store.jobs.detail_reads[by].fetch({**params, "account_id": scope.account_id + 999}) is None
    with store.db.read() as conn:  # the pool's connections are left as found: no open transaction
        assert conn.execute(select(func.count()).select_from(jobs)).scalar() == 1


def test_etag_reads_follow_the_job_and_its_scope(store: Store) -> None:
    """The reads behind a 304 (store.jobs.tag / tag_by_uuid, on the driver connection for an
    account-wide key): the parts move with every change (an update bumps the version, a log line
    the newest log id), agree with the row, and a job outside the scope is a 404 by both ways."""
    job_id, scope = new_job(store, 2, start=False)
    _, project_id = store.auth.ensure_defaults()
    row = status_of(store, job_id)
    uuid, version, newest = store.jobs.tag(scope, job_id)
    assert (uuid, version) == (row["uuid"], row["version"])
    assert store.jobs.tag_by_uuid(scope, uuid) == (version, JobStatus.CREATED)
    with store.db.read() as conn:
        logs = conn.execute(select(func.max(job_logs.c.id)).where(job_logs.c.job_id == job_id)).scalar()
    assert newest == logs

    with store.db.write() as conn:
        lifecycle.add_log(conn, job_id, "INFO", "one more line")
    assert store.jobs.tag(scope, job_id)[2] > newest  # a log line alone moves the newest log id
    store.jobs.run(scope, job_id)
    after = store.jobs.tag(scope, job_id)
    assert after[1] > version and after[2] > newest
    assert store.jobs.tag_by_uuid(scope, uuid) == (after[1], JobStatus.PENDING)

    narrowed = Scope(scope.account_id, frozenset({project_id}))  # the SQLAlchemy path
    assert store.jobs.tag(narrowed, job_id) == after
    assert store.jobs.tag_by_uuid(narrowed, uuid) == (after[1], JobStatus.PENDING)
    for outside in (Scope(scope.account_id + 999), Scope(scope.account_id, frozenset({project_id + 1}))):
        with pytest.raises(NotFound):
            store.jobs.tag(outside, job_id)
        with pytest.raises(NotFound):
            store.jobs.tag_by_uuid(outside, uuid)
