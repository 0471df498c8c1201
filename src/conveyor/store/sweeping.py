"""Sweep repository: the upkeep no single worker can be trusted to do (``services/sweeper.py``
runs it each period).

It re-queues chunks whose lease ran out (their worker died or hung), times jobs out, settles
canceling jobs, and lists the queued chunks a dispatcher may have to send again. Every step is
a guarded compare-and-set, so several sweepers (one per API server) may run at once.
"""

from __future__ import annotations

from sqlalchemy import select, update

from conveyor.clock import utcnow
from conveyor.domain.pull import ASYNC_API
from conveyor.domain.status import RUNNABLE, ChunkStatus, JobStatus
from conveyor.store import lifecycle
from conveyor.store.chunks import revoke_if_quiet
from conveyor.store.database import Database
from conveyor.store.tables import chunks, jobs


class SweepRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def reap_expired(self) -> list[int]:
        """Re-queue chunks whose lease ran out (their worker died or hung). Returns their ids."""
        now = utcnow()
        with self.db.write() as conn:
            expired = conn.execute(
                update(chunks)
                .where(chunks.c.status == ChunkStatus.LEASED.value, chunks.c.lease_expires_at < now)
                .values(
                    status=ChunkStatus.QUEUED.value, lease_token=None, leased_by=None, lease_expires_at=None
                )
                .returning(chunks.c.id, chunks.c.job_id)
            ).all()
            for chunk_id, job_id in expired:
                lifecycle.add_log(
                    conn,
                    job_id,
                    "WARNING",
                    f"Lease of chunk {chunk_id} expired (worker lost); chunk re-queued",
                    now,
                )
        if expired:
            # The warning above is visible in the job's detail: bump the job rows' version (their
            # ETag) in a transaction of its own, so the chunk locks above never wait on a job lock.
            with self.db.write() as conn:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(sorted({row[1] for row in expired})))
                    .values(version=jobs.c.version + 1)
                )
        return [row[0] for row in expired]

    def time_out_jobs(self) -> list[int]:
        now = utcnow()
        with self.db.read() as conn:
            due = (
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.deadline_at < now, jobs.c.status.in_([s.value for s in RUNNABLE])
                    )
                )
                .scalars()
                .all()
            )
        done: list[int] = []
        for job_id in due:
            with self.db.write() as conn:
                if lifecycle.finish(conn, job_id, JobStatus.TIMEDOUT, "timeout reached"):
                    done.append(job_id)
        return done

    def settle_canceling(self, grace_seconds: float) -> list[int]:
        """REVOKE canceling jobs with no chunk in flight, or whose workers did not stop within the grace."""
        now = utcnow()
        with self.db.read() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.cancel_requested_at).where(
                    jobs.c.status == JobStatus.CANCELING.value
                )
            ).all()
        settled: list[int] = []
        for job_id, requested in rows:
            overdue = requested is not None and (now - requested).total_seconds() > grace_seconds
            with self.db.write() as conn:
                if overdue:
                    done = lifecycle.finish(
                        conn,
                        job_id,
                        JobStatus.REVOKED,
                        "canceled; a worker did not stop in time, its chunk was dropped",
                    )
                else:
                    done = revoke_if_quiet(conn, job_id)
                if done:
                    settled.append(job_id)
        return settled

    def queued_chunk_ids(self, limit: int = 10000) -> list[int]:
        """The oldest QUEUED chunks: what a dispatcher publishes again when its messages were lost."""
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(chunks.c.id)
                    .join(jobs, jobs.c.id == chunks.c.job_id)
                    # async_api jobs have no chunks; never publish one to a broker all the same.
                    .where(chunks.c.status == ChunkStatus.QUEUED.value, jobs.c.dispatch_mode != ASYNC_API)
                    .order_by(chunks.c.id)
                    .limit(limit)
                ).scalars()
            )
