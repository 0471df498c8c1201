"""Chunk repository: what workers do to the store (claim, heartbeat, write back, release).

Exactly-once counting rests on two guards. A chunk is held under a lease token; every
write-back first re-checks that token, so a worker whose lease expired (and whose chunk
was handed to another) cannot write. And only PENDING items are loaded and updated, so a
redelivered chunk processes just what its previous holder had not written back.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from conveyor.clock import ms_between, utcnow
from conveyor.domain.artifacts import Artifact
from conveyor.domain.status import RUNNABLE, ChunkKind, ChunkStatus, JobStatus
from conveyor.store import artifacts, bulk, lifecycle
from conveyor.store.database import Database
from conveyor.store.tables import chunks, job_logs, jobs, pipelines

ACCEPTS_RESULTS = [s.value for s in (*RUNNABLE, JobStatus.CANCELING)]


@dataclass(frozen=True)
class Claim:
    chunk_id: int
    job_id: int
    kind: ChunkKind
    first_seq: int
    last_seq: int
    token: str
    attempt: int


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to know about the job of a chunk."""

    job_id: int
    status: JobStatus
    pipeline_slug: str | None
    config: dict[str, Any]
    explain: bool
    delay: float
    deadline_at: datetime | None


@dataclass(frozen=True)
class ItemInput:
    id: int
    seq: int
    name: str
    kind: str
    data: bytes


@dataclass
class ItemOutcome:
    id: int
    ok: bool
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    artifacts: tuple[Artifact, ...] = ()


@dataclass
class LogLine:
    level: str
    message: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class WriteBack:
    """Outcome of a write-back: whether the lease still held, and the job's state after it."""

    held: bool
    job_status: JobStatus | None


class _LeaseLost(Exception):
    pass


class ChunkRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = bulk.Dialect(db.dialect)

    def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        chunk_id: int | None = None,
        pipeline_slugs: Sequence[str] = (),
    ) -> Claim | None:
        """Lease the oldest queued chunk of a runnable job (or the given chunk, for brokered dispatch)."""
        now = utcnow()
        token = secrets.token_hex(16)
        with self.db.write() as conn:
            query = (
                select(
                    chunks.c.id,
                    chunks.c.job_id,
                    chunks.c.kind,
                    chunks.c.first_seq,
                    chunks.c.last_seq,
                    chunks.c.attempts,
                )
                .join(jobs, jobs.c.id == chunks.c.job_id)
                .where(
                    chunks.c.status == ChunkStatus.QUEUED.value,
                    jobs.c.status.in_([s.value for s in RUNNABLE]),
                )
                .order_by(chunks.c.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=chunks)
            )
            if chunk_id is not None:
                query = query.where(chunks.c.id == chunk_id)
            if pipeline_slugs:
                query = query.join(pipelines, pipelines.c.id == jobs.c.pipeline_id).where(
                    pipelines.c.slug.in_(list(pipeline_slugs))
                )
            row = conn.execute(query).first()
            if row is None:
                return None
            taken = conn.execute(
                update(chunks)
                .where(chunks.c.id == row.id, chunks.c.status == ChunkStatus.QUEUED.value)
                .values(
                    status=ChunkStatus.LEASED.value,
                    lease_token=token,
                    leased_by=worker,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=chunks.c.attempts + 1,
                )
            ).rowcount
            if taken != 1:
                return None
        return Claim(
            row.id, row.job_id, ChunkKind(row.kind), row.first_seq, row.last_seq, token, row.attempts + 1
        )

    def start_job(self, job_id: int) -> None:
        """PENDING -> STARTED on the first claimed chunk; queue time is set here, once."""
        now = utcnow()
        with self.db.write() as conn:
            submitted_at = conn.execute(
                select(jobs.c.submitted_at).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
            lifecycle.transition(
                conn,
                job_id,
                JobStatus.STARTED,
                "a worker started the first chunk",
                now=now,
                values={"started_at": now, "queue_time_ms": ms_between(submitted_at, now)},
            )

    def job_context(self, job_id: int) -> JobContext | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.status,
                    jobs.c.config,
                    jobs.c.explain,
                    jobs.c.delay,
                    jobs.c.deadline_at,
                    pipelines.c.slug,
                )
                .select_from(jobs.outerjoin(pipelines, pipelines.c.id == jobs.c.pipeline_id))
                .where(jobs.c.id == job_id)
            ).first()
        if row is None:
            return None
        return JobContext(
            row.id,
            JobStatus(row.status),
            row.slug,
            dict(row.config or {}),
            bool(row.explain),
            float(row.delay or 0),
            row.deadline_at,
        )

    def pending_items(self, claim: Claim) -> list[ItemInput]:
        with self.db.read() as conn:
            rows = bulk.pending_items(conn, self.dialect, claim.job_id, claim.first_seq, claim.last_seq)
        return [ItemInput(r[0], r[1], r[2], r[3], bytes(r[4] or b"")) for r in rows]

    def heartbeat(
        self, claim: Claim, lease_seconds: float, *, delay_progress: float | None = None
    ) -> JobContext | None:
        """Renew the lease. Returns the job's current state, or None if the lease is lost."""
        now = utcnow()
        with self.db.write() as conn:
            renewed = conn.execute(
                update(chunks)
                .where(
                    chunks.c.id == claim.chunk_id,
                    chunks.c.lease_token == claim.token,
                    chunks.c.status == ChunkStatus.LEASED.value,
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            ).rowcount
            if renewed != 1:
                return None
            if delay_progress is not None:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == claim.job_id)
                    .values(delay_progress=min(delay_progress, 1.0), updated_at=now)
                )
        return self.job_context(claim.job_id)

    def write_back(
        self,
        claim: Claim,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        *,
        lease_seconds: float,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None = None,
    ) -> WriteBack:
        """Write finished items and their counters, in one transaction guarded by the lease.

        With ``complete`` the chunk is marked DONE. If the last pending item of the job is
        written, or the failure policy can no longer be met, the job is finished here too.
        """
        now = utcnow()
        try:
            return self._write_back(claim, outcomes, logs, lease_seconds, complete, stage_params, now)
        except _LeaseLost:
            return WriteBack(False, None)

    def _write_back(
        self,
        claim: Claim,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        lease_seconds: float,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None,
        now: datetime,
    ) -> WriteBack:
        n_ok = sum(1 for o in outcomes if o.ok)
        n_failed = len(outcomes) - n_ok
        item_params = bulk.item_result_params(self.dialect, outcomes, now)  # before taking the write lock
        with self.db.write() as conn:
            # Job row first (lock order), then the chunk lease, then the items.
            job = conn.execute(
                update(jobs)
                .where(jobs.c.id == claim.job_id, jobs.c.status.in_(ACCEPTS_RESULTS))
                .values(
                    completed=jobs.c.completed + n_ok,
                    failed=jobs.c.failed + n_failed,
                    pending=jobs.c.pending - len(outcomes),
                    updated_at=now,
                )
                .returning(jobs.c.status, jobs.c.stage_params)
            ).first()
            if job is None or not self._renew(conn, claim, now, lease_seconds, complete=complete):
                raise _LeaseLost  # rolls the counter update back
            if outcomes:
                bulk.update_items(conn, self.dialect, item_params)
                artifacts.replace(conn, claim.job_id, [(o.id, a) for o in outcomes for a in o.artifacts], now)
            if logs:
                conn.execute(
                    insert(job_logs),
                    [
                        {
                            "job_id": claim.job_id,
                            "created_at": line.created_at,
                            "level": line.level,
                            "message": line.message,
                        }
                        for line in logs
                    ],
                )
            if stage_params:
                merged = {**dict(job.stage_params or {}), **stage_params}
                conn.execute(update(jobs).where(jobs.c.id == claim.job_id).values(stage_params=merged))
            finished = lifecycle.finish_if_complete(conn, claim.job_id)
            status = finished.target if finished else JobStatus(job.status)
        return WriteBack(True, status)

    def _renew(
        self, conn: Connection, claim: Claim, now: datetime, lease_seconds: float, *, complete: bool
    ) -> bool:
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
        if complete:
            values.update(status=ChunkStatus.DONE.value, finished_at=now, lease_token=None)
        return (
            conn.execute(
                update(chunks)
                .where(
                    chunks.c.id == claim.chunk_id,
                    chunks.c.lease_token == claim.token,
                    chunks.c.status == ChunkStatus.LEASED.value,
                )
                .values(**values)
            ).rowcount
            == 1
        )

    def release(self, claim: Claim, *, requeue: bool) -> None:
        """Give a chunk back: re-queue it (shutdown) or drop it (job canceled or finished).

        A CANCELING job whose last chunk is released becomes REVOKED here.
        """
        now = utcnow()
        with self.db.write() as conn:
            lifecycle.lock_job_status(conn, claim.job_id)
            values: dict[str, Any] = {"lease_token": None, "leased_by": None, "lease_expires_at": None}
            values["status"] = ChunkStatus.QUEUED.value if requeue else ChunkStatus.DROPPED.value
            if not requeue:
                values["finished_at"] = now
            conn.execute(
                update(chunks)
                .where(
                    chunks.c.id == claim.chunk_id,
                    chunks.c.lease_token == claim.token,
                    chunks.c.status == ChunkStatus.LEASED.value,
                )
                .values(**values)
            )
            self._revoke_if_quiet(conn, claim.job_id)

    def finish_delay(self, claim: Claim) -> list[int]:
        """The delay stage is over: mark it done and release the job's item chunks."""
        now = utcnow()
        with self.db.write() as conn:
            status = lifecycle.lock_job_status(conn, claim.job_id)
            if status not in RUNNABLE or not self._renew(conn, claim, now, 1.0, complete=True):
                return []
            conn.execute(
                update(jobs).where(jobs.c.id == claim.job_id).values(delay_progress=1.0, updated_at=now)
            )
            lifecycle.add_log(conn, claim.job_id, "INFO", "Delay stage finished", now)
            released = (
                conn.execute(
                    update(chunks)
                    .where(chunks.c.job_id == claim.job_id, chunks.c.status == ChunkStatus.BLOCKED.value)
                    .values(status=ChunkStatus.QUEUED.value)
                    .returning(chunks.c.id)
                )
                .scalars()
                .all()
            )
            lifecycle.finish_if_complete(conn, claim.job_id)
            return list(released)

    # ------------------------------------------------------------- sweeping
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
                    done = self._revoke_if_quiet(conn, job_id)
                if done:
                    settled.append(job_id)
        return settled

    @staticmethod
    def _revoke_if_quiet(conn: Connection, job_id: int) -> lifecycle.Transitioned | None:
        status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()
        if status != JobStatus.CANCELING.value or lifecycle.has_leased_chunks(conn, job_id):
            return None
        return lifecycle.finish(conn, job_id, JobStatus.REVOKED, "canceled; workers stopped")

    def queued_chunk_ids(self, limit: int = 10000) -> list[int]:
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(chunks.c.id)
                    .where(chunks.c.status == ChunkStatus.QUEUED.value)
                    .order_by(chunks.c.id)
                    .limit(limit)
                ).scalars()
            )
