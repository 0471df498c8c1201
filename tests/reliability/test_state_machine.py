"""Property test: no sequence of user actions and worker events breaks the job state machine.

Hypothesis drives the real store (SQLite, the repositories the API and workers call) through
random interleavings of submit / run / cancel / retry / delete, worker claims, partial and final
write-backs with random outcomes, releases, lease expiry, timeouts and cancel settling, with
several leases alive at once (including stale ones whose chunk was re-queued and claimed again).
After every step, for every job:

- the recorded transitions form one chain of legal moves (the domain's table) ending in the
  job's current status;
- the counters equal the item rows (no item counted twice or lost) and add up to the total;
- a terminal job has no leased or queued chunk left that could still write to it.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)
from sqlalchemy import func, select, update

from conveyor.clock import utcnow
from conveyor.domain.access import Scope
from conveyor.domain.status import TERMINAL, JobStatus, allowed_sources
from conveyor.domain.work import Claim, ItemInput, ItemOutcome
from conveyor.errors import ConveyorError
from conveyor.services.bootstrap import prepare
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.jobs import NewJob
from conveyor.store.tables import chunks, items, job_events, jobs

LEASE_SECONDS = 30.0


@dataclass
class Held:
    """A worker's view of its chunk: the lease and the items it read right after claiming.

    Write-backs use this snapshot, as a real worker does, so a worker whose lease expired while
    it was busy writes results for items another worker may have finished meanwhile."""

    claim: Claim
    items: list[ItemInput]


class JobLifecycle(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="conveyor-fsm-")
        data_dir = Path(self.tmp.name)
        self.store = Store(Settings(data_dir=data_dir, chunk_size=3), pool_size=2)
        prepare(self.store)
        account_id, project_id = self.store.auth.ensure_defaults()
        self.scope = Scope(account_id)
        self.project_id = project_id
        self.pipeline_id = self.store.pipelines.latest("test-delay")["id"]
        self.job_ids: list[int] = []
        self.workers = 0

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    # ------------------------------------------------------------------ user actions
    @initialize(n=st.integers(min_value=1, max_value=8))
    def a_running_job(self, n: int) -> None:
        self.submit(n, start=True, timeout=False)

    @rule(n=st.integers(min_value=1, max_value=8), start=st.booleans(), timeout=st.booleans())
    def submit(self, n: int, start: bool, timeout: bool) -> None:
        row: dict[str, Any] = {
            "name": "fsm",
            "account_id": self.scope.account_id,
            "project_id": self.project_id,
            "pipeline_id": self.pipeline_id,
            "job_type": "ml",
            "dispatch_mode": "internal",
            "delay": 0.0,
            "limit": None,
            "shuffle": False,
            "timeout_ms": 60_000 if timeout else None,
            "explain": False,
            "max_failed_ratio": 0.5,
            "config": {},
            "input_summary": {},
            "input_byte_amount": n,
            "submitted_by": "fsm",
        }
        item_rows = [
            {"seq": i, "name": f"i{i}", "kind": "text", "byte_size": 1, "data": b"x", "status": "PENDING"}
            for i in range(n)
        ]
        job_id, _ = self.store.jobs.create(NewJob(**row), item_rows, start=start)
        self.job_ids.append(job_id)

    def _job(self, index: int) -> int | None:
        return self.job_ids[index % len(self.job_ids)] if self.job_ids else None

    @rule(index=st.integers(min_value=0, max_value=3))
    def run(self, index: int) -> None:
        self._attempt(lambda job_id: self.store.jobs.run(self.scope, job_id), index)

    @rule(index=st.integers(min_value=0, max_value=3))
    def cancel(self, index: int) -> None:
        self._attempt(lambda job_id: self.store.jobs.cancel(self.scope, job_id), index)

    @rule(index=st.integers(min_value=0, max_value=3))
    def retry(self, index: int) -> None:
        self._attempt(lambda job_id: self.store.jobs.retry(self.scope, job_id), index)

    @rule(index=st.integers(min_value=0, max_value=3))
    def delete(self, index: int) -> None:
        job_id = self._job(index)
        if job_id is not None and self._attempt(lambda j: self.store.jobs.delete(self.scope, j), index):
            self.job_ids.remove(job_id)

    def _attempt(self, action: Any, index: int) -> bool:
        job_id = self._job(index)
        if job_id is None:
            return False
        try:
            action(job_id)
        except ConveyorError as exc:
            # Refusals are fine (409 in the API); anything else would be a 5xx.
            assert exc.status_code in (404, 409), exc
            return False
        return True

    # ------------------------------------------------------------------ worker events
    @rule(target=claims)
    def claim(self) -> Any:
        self.workers += 1
        claim = self.store.chunks.claim(f"fsm-worker-{self.workers}", LEASE_SECONDS)
        if claim is None:
            return multiple()
        context = self.store.chunks.job_context(claim.job_id)
        if context is not None and context.status == JobStatus.PENDING:
            self.store.chunks.start_job(claim.job_id)
        return Held(claim, self.store.chunks.pending_items(claim))

    @rule(
        held=claims,
        results=st.lists(st.booleans(), min_size=1, max_size=3),
        take=st.integers(min_value=0, max_value=3),
        complete=st.booleans(),
    )
    def write_back(self, held: Held, results: list[bool], take: int, complete: bool) -> None:
        pending, held.items = held.items[:take], held.items[take:]
        now = utcnow()
        outcomes = [
            ItemOutcome(item.id, ok, {"seq": item.seq} if ok else None, None if ok else "boom", now, now)
            for item, ok in zip(pending, results * 3, strict=False)
        ]
        # A stale lease (expired and re-claimed, or the job ended) must simply not be held.
        finishes = complete and not held.items
        self.store.chunks.write_back(held.claim, outcomes, [], lease_seconds=LEASE_SECONDS, complete=finishes)

    @rule(held=consumes(claims), requeue=st.booleans())
    def release(self, held: Held, requeue: bool) -> None:
        self.store.chunks.release(held.claim, requeue=requeue)

    @rule()
    def leases_expire(self) -> None:
        with self.store.db.write() as conn:
            conn.execute(
                update(chunks)
                .where(chunks.c.status == "LEASED")
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        self.store.sweeping.reap_expired()

    @rule()
    def deadlines_pass(self) -> None:
        with self.store.db.write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.deadline_at.is_not(None))
                .values(deadline_at=utcnow() - timedelta(seconds=1))
            )
        self.store.sweeping.time_out_jobs()

    @rule()
    def cancel_grace_ends(self) -> None:
        self.store.sweeping.settle_canceling(0.0)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def transitions_are_one_legal_chain(self) -> None:
        with self.store.db.read() as conn:
            for job_id in self.job_ids:
                status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()
                moves = conn.execute(
                    select(job_events.c.from_status, job_events.c.to_status)
                    .where(job_events.c.job_id == job_id)
                    .order_by(job_events.c.id)
                ).all()
                assert moves[0] == (None, "CREATED"), moves
                for (_, previous_to), (source, target) in itertools.pairwise(moves):
                    assert source == previous_to, moves
                    assert JobStatus(source) in allowed_sources(JobStatus(target)), moves
                assert moves[-1][1] == status, (moves, status)

    @invariant()
    def counters_equal_the_item_rows(self) -> None:
        with self.store.db.read() as conn:
            for job_id in self.job_ids:
                job = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()
                counted = dict(
                    conn.execute(
                        select(items.c.status, func.count())
                        .where(items.c.job_id == job_id)
                        .group_by(items.c.status)
                    ).all()
                )
                assert job["completed"] == counted.get("SUCCESS", 0), (job, counted)
                assert job["failed"] == counted.get("FAILURE", 0), (job, counted)
                assert job["canceled"] == counted.get("CANCELED", 0), (job, counted)
                assert job["pending"] == counted.get("PENDING", 0), (job, counted)
                assert job["completed"] + job["failed"] + job["canceled"] + job["pending"] == job["total"]

    @invariant()
    def finished_jobs_have_no_live_chunks(self) -> None:
        with self.store.db.read() as conn:
            for job_id in self.job_ids:
                status = JobStatus(
                    conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()
                )
                if status in TERMINAL:
                    live = conn.execute(
                        select(func.count()).where(
                            chunks.c.job_id == job_id, chunks.c.status.in_(["LEASED", "QUEUED"])
                        )
                    ).scalar_one()
                    assert live == 0, (job_id, status)


JobLifecycle.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestJobLifecycle = JobLifecycle.TestCase


def test_a_stale_lease_writes_nothing_after_its_chunk_was_claimed_again() -> None:
    """The interleaving random search rarely hits, spelled out: A's lease expires while it works,
    B claims the chunk and writes one item, then A writes its (stale) results for all three."""
    machine = JobLifecycle()
    try:
        machine.submit(3, start=True, timeout=False)
        first = machine.claim()
        machine.leases_expire()
        second = machine.claim()
        assert isinstance(first, Held) and isinstance(second, Held)
        assert first.claim.chunk_id == second.claim.chunk_id
        machine.write_back(second, [True], take=1, complete=False)
        machine.write_back(first, [True], take=3, complete=True)
        machine.counters_equal_the_item_rows()
        machine.transitions_are_one_legal_chain()
    finally:
        machine.teardown()
