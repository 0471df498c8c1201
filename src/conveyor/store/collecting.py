"""The collect stage's verbs: append a listed page of items (and its chunk), finish, fail.

A job over an S3 prefix or a manifest starts with the references given directly; its
``collect`` chunk, leased by a worker like any chunk, lists the rest page by page. Each page
is one transaction, guarded by the collect chunk's lease: its items, one items chunk for
them (queued at once, so they are processed while listing goes on), the job's counters
(``total`` and ``pending`` grow together, so they are exact at every moment) and the cursor
to resume from. A worker killed mid-listing leaves a committed cursor behind; the next holder
of the chunk lists from there, so no entry is listed twice or skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from conveyor.clock import utcnow
from conveyor.domain.status import RUNNABLE, ChunkKind, ChunkStatus, ItemStatus, JobStatus
from conveyor.domain.work import Claim
from conveyor.store import bulk, lifecycle
from conveyor.store.chunks import update_lease
from conveyor.store.database import Database
from conveyor.store.jobs import chunk_row
from conveyor.store.tables import chunks, jobs


@dataclass(frozen=True)
class Appended:
    """A page's outcome: whether the lease held, the chunk queued for its items, the job's state."""

    held: bool
    chunk_ids: list[int]
    job_status: JobStatus | None


class CollectRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = bulk.Dialect(db.dialect)

    def plan(self, job_id: int) -> dict[str, Any] | None:
        with self.db.read() as conn:
            value = conn.execute(select(jobs.c.collect).where(jobs.c.id == job_id)).scalar()
        return dict(value) if value else None

    def append(
        self,
        claim: Claim,
        rows: list[dict[str, Any]],
        plan: dict[str, Any],
        *,
        lease_seconds: float,
    ) -> Appended:
        """Insert one listed page (rows already numbered from the job's current total) and
        record ``plan`` (with its new cursor), all or nothing."""
        now = utcnow()
        with self.db.write() as conn:
            status = lifecycle.lock_job_status(conn, claim.job_id)  # job row first (lock order)
            if status not in RUNNABLE:
                return Appended(True, [], status)
            if not update_lease(conn, claim, lease_expires_at=now + timedelta(seconds=lease_seconds)):
                return Appended(False, [], status)
            chunk_ids: list[int] = []
            n_failed = sum(1 for r in rows if r["status"] == ItemStatus.FAILURE.value)
            if rows:
                bulk.insert_items(conn, self.dialect, claim.job_id, rows)
                state = ChunkStatus.BLOCKED if _delay_pending(conn, claim.job_id) else ChunkStatus.QUEUED
                first, last = rows[0]["seq"], rows[-1]["seq"]
                chunk = chunk_row(claim.job_id, ChunkKind.ITEMS, first, last, len(rows), state, now)
                chunk_id = conn.execute(chunks.insert().values(**chunk).returning(chunks.c.id)).scalar_one()
                if state is ChunkStatus.QUEUED:
                    chunk_ids.append(chunk_id)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == claim.job_id)
                .values(
                    total=jobs.c.total + len(rows),
                    pending=jobs.c.pending + len(rows) - n_failed,
                    failed=jobs.c.failed + n_failed,
                    collect=plan,
                    updated_at=now,
                )
            )
        return Appended(True, chunk_ids, status)

    def finish(self, claim: Claim, plan: dict[str, Any], message: str) -> JobStatus | None:
        """Listing is over: ``total`` is final. Closes the chunk; the job ends here if its items
        are already all done (or none were found)."""
        now = utcnow()
        with self.db.write() as conn:
            status = lifecycle.lock_job_status(conn, claim.job_id)
            if status not in RUNNABLE:
                return status
            values = {"status": ChunkStatus.DONE.value, "finished_at": now, "lease_token": None}
            if not update_lease(conn, claim, **values):
                return None
            conn.execute(update(jobs).where(jobs.c.id == claim.job_id).values(collect=plan, updated_at=now))
            lifecycle.add_log(conn, claim.job_id, "INFO", message, now)
            total = conn.execute(select(jobs.c.total).where(jobs.c.id == claim.job_id)).scalar_one()
            if total == 0:
                done = lifecycle.finish(conn, claim.job_id, JobStatus.FAILURE, "no inputs were found")
            else:
                done = lifecycle.finish_if_complete(conn, claim.job_id)
            return done.target if done is not None else status

    def fail(self, claim: Claim, plan: dict[str, Any], reason: str) -> None:
        """A source could not be listed (a manifest gone, a bucket refusing): the job fails with
        the reason; items listed so far keep their results."""
        with self.db.write() as conn:
            status = lifecycle.lock_job_status(conn, claim.job_id)
            if status not in RUNNABLE:
                return
            values = {"status": ChunkStatus.DONE.value, "finished_at": utcnow(), "lease_token": None}
            if not update_lease(conn, claim, **values):
                return
            conn.execute(update(jobs).where(jobs.c.id == claim.job_id).values(collect=plan))
            lifecycle.add_log(conn, claim.job_id, "ERROR", f"Collect stage failed: {reason}")
            lifecycle.finish(conn, claim.job_id, JobStatus.FAILURE, f"collect failed: {reason}")


def _delay_pending(conn: Any, job_id: int) -> bool:
    """The job's delay stage has not finished: new item chunks wait BLOCKED behind it."""
    open_delay = conn.execute(
        select(chunks.c.id).where(
            chunks.c.job_id == job_id,
            chunks.c.kind == ChunkKind.DELAY.value,
            chunks.c.status.in_([ChunkStatus.QUEUED.value, ChunkStatus.LEASED.value]),
        )
    ).first()
    return open_delay is not None
