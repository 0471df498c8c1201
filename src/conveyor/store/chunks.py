"""Chunk repository: what workers do to the store (claim, heartbeat, write back, release).

Exactly-once counting rests on two guards. A chunk is held under a lease token; every
write-back first re-checks that token (``_leased``, the one lease guard), so a worker whose
lease expired (and whose chunk was handed to another) cannot write. And only PENDING items
are loaded and updated, so a redelivered chunk processes just what its previous holder had
not written back.

The values exchanged with workers (``Claim``, ``JobContext``, ``ItemOutcome``, ...) live in
``conveyor.domain.work``; the sweeper's verbs (reap leases, time out, settle canceling) in
``store/sweeping.py``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, insert, select, update

from conveyor.clock import ms_between, utcnow
from conveyor.domain.access import Scope
from conveyor.domain.pull import ASYNC_API
from conveyor.domain.status import RUNNABLE, ChunkKind, ChunkStatus, JobStatus
from conveyor.domain.work import Claim, ItemInput, ItemOutcome, JobContext, LogLine, WriteBack
from conveyor.store import artifacts, bulk, lifecycle, outputs
from conveyor.store.database import Database
from conveyor.store.jobs import scope_clauses
from conveyor.store.tables import chunks, job_logs, jobs, pipelines

ACCEPTS_RESULTS = [s.value for s in (*RUNNABLE, JobStatus.CANCELING)]
#: What a Claim is made of (``claim`` leases a chunk, ``held`` rebuilds an HTTP worker's claim).
_CLAIM_COLUMNS = (
    chunks.c.id,
    chunks.c.job_id,
    chunks.c.kind,
    chunks.c.first_seq,
    chunks.c.last_seq,
    chunks.c.attempts,
)
#: A claim that finds its job's row locked (its first chunk racing a cancel) tries again this often.
CLAIM_ATTEMPTS = 10


class _LeaseLost(Exception):
    pass


class _JobBusy(Exception):
    """Another transaction holds the job's row: roll the claim back and try again."""


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
        kinds: Sequence[ChunkKind] = (),
        scope: Scope | None = None,
    ) -> Claim | None:
        """Lease the oldest queued chunk of a runnable job (or the given chunk, for brokered dispatch).

        ``pipeline_slugs``, ``kinds`` and ``scope`` narrow what may be taken (an HTTP worker:
        item chunks of its pipelines, in its key's account or projects). The claim carries its
        job's state; the job's first chunk also starts the job (PENDING -> STARTED), in the same
        transaction.
        """
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                return self._claim(worker, lease_seconds, chunk_id, pipeline_slugs, kinds, scope)
            except _JobBusy:
                time.sleep(0.01 * (attempt + 1))
        return None

    def _claim(
        self,
        worker: str,
        lease_seconds: float,
        chunk_id: int | None,
        pipeline_slugs: Sequence[str],
        kinds: Sequence[ChunkKind],
        scope: Scope | None,
    ) -> Claim | None:
        now = utcnow()
        token = secrets.token_hex(16)
        with self.db.write() as conn:
            query = (
                select(*_CLAIM_COLUMNS, jobs.c.status.label("job_status"))
                .join(jobs, jobs.c.id == chunks.c.job_id)
                .where(
                    chunks.c.status == ChunkStatus.QUEUED.value,
                    jobs.c.status.in_([s.value for s in RUNNABLE]),
                    # async_api jobs are served to Antenna pull workers only (store/pull.py),
                    # never to local, Celery or HTTP chunk workers.
                    jobs.c.dispatch_mode != ASYNC_API,
                )
                .order_by(chunks.c.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=chunks)
            )
            if chunk_id is not None:
                query = query.where(chunks.c.id == chunk_id)
            if kinds:
                query = query.where(chunks.c.kind.in_([k.value for k in kinds]))
            if scope is not None:
                query = query.where(*scope_clauses(scope))
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
            if row.job_status == JobStatus.PENDING.value:
                # This transaction holds the chunk's row; the lock order is job row first, so
                # only take the job row if it is free (else roll back and claim again).
                free = conn.execute(
                    select(jobs.c.id).where(jobs.c.id == row.job_id).with_for_update(skip_locked=True)
                ).first()
                if free is None:
                    raise _JobBusy
                _start(conn, row.job_id, now)
            job = _context(conn, row.job_id)
        return Claim(
            row.id,
            row.job_id,
            ChunkKind(row.kind),
            row.first_seq,
            row.last_seq,
            token,
            row.attempts + 1,
            job=job,
        )

    def held(self, chunk_id: int, token: str, scope: Scope) -> Claim | None:
        """The chunk as a claim under ``token`` (for a worker that holds it over HTTP), if it is
        in ``scope``; None when there is no such chunk there. The token is not checked here:
        every verb taking the claim re-checks it (the lease guard)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(*_CLAIM_COLUMNS)
                .join(jobs, jobs.c.id == chunks.c.job_id)
                .where(chunks.c.id == chunk_id, *scope_clauses(scope))
            ).first()
        if row is None:
            return None
        return Claim(
            row.id, row.job_id, ChunkKind(row.kind), row.first_seq, row.last_seq, token, row.attempts
        )

    def start_job(self, job_id: int) -> None:
        """PENDING -> STARTED (what ``claim`` does for a job's first chunk); a no-op once started."""
        with self.db.write() as conn:
            _start(conn, job_id, utcnow())

    def job_context(self, job_id: int) -> JobContext | None:
        with self.db.read() as conn:
            return _context(conn, job_id)

    def pending_items(self, claim: Claim) -> list[ItemInput]:
        with self.db.read() as conn:
            rows = bulk.pending_items(conn, self.dialect, claim.job_id, claim.first_seq, claim.last_seq)
        return [ItemInput(r[0], r[1], r[2], r[3], bytes(r[4] or b""), r[5]) for r in rows]

    def heartbeat(
        self, claim: Claim, lease_seconds: float, *, delay_progress: float | None = None
    ) -> JobContext | None:
        """Renew the lease. Returns the job's current state, or None if the lease is lost."""
        now = utcnow()
        with self.db.write() as conn:
            if not update_lease(conn, claim, lease_expires_at=now + timedelta(seconds=lease_seconds)):
                return None
            if delay_progress is not None:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == claim.job_id)
                    .values(delay_progress=min(delay_progress, 1.0), updated_at=now)
                )
            return _context(conn, claim.job_id)

    def write_back(
        self,
        claim: Claim,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        *,
        lease_seconds: float,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None = None,
        shards: Sequence[outputs.ShardWritten] = (),
    ) -> WriteBack:
        """Write finished items and their counters, in one transaction guarded by the lease.

        With ``complete`` the chunk is marked DONE. If the last pending item of the job is
        written, or the failure policy can no longer be met, the job is finished here too.
        ``shards``: the output shard files written (before this call) with these outcomes in
        them, recorded in the same transaction (``store/outputs.py``).
        """
        now = utcnow()
        item_params = bulk.item_result_params(self.dialect, outcomes, now)  # before taking the write lock
        try:
            with self.db.write() as conn:
                # Job row first (lock order), then the chunk lease, then the items.
                job = conn.execute(
                    select(jobs.c.status, jobs.c.stage_params)
                    .where(jobs.c.id == claim.job_id, jobs.c.status.in_(ACCEPTS_RESULTS))
                    .with_for_update()
                ).first()
                if job is None or not self._renew(conn, claim, now, lease_seconds, complete=complete):
                    raise _LeaseLost
                # Counted from the rows moved out of PENDING here, not from the outcomes sent: a
                # replayed or late post (HTTP workers) changes no counter.
                written = (
                    bulk.update_items(
                        conn, self.dialect, item_params, claim.job_id, claim.first_seq, claim.last_seq
                    )
                    if outcomes
                    else set()
                )
                moved = [o for o in outcomes if o.id in written]
                n_ok = sum(1 for o in moved if o.ok)
                # Inputs by reference count in the job's input bytes once a worker has read them.
                fetched_bytes = sum(o.byte_size for o in moved if o.byte_size is not None)
                if moved:
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == claim.job_id)
                        .values(
                            completed=jobs.c.completed + n_ok,
                            failed=jobs.c.failed + (len(moved) - n_ok),
                            pending=jobs.c.pending - len(moved),
                            input_byte_amount=jobs.c.input_byte_amount + fetched_bytes,
                            updated_at=now,
                        )
                    )
                    made = [(o.id, a) for o in moved for a in o.artifacts]
                    artifacts.replace(conn, claim.job_id, made, now)
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
                outputs.record(conn, claim.job_id, shards, now)
                finished = lifecycle.finish_if_complete(conn, claim.job_id)
                status = finished.target if finished else JobStatus(job.status)
        except _LeaseLost:
            return WriteBack(False, None)
        return WriteBack(True, status, len(moved))

    def _renew(
        self, conn: Connection, claim: Claim, now: datetime, lease_seconds: float, *, complete: bool
    ) -> bool:
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
        if complete:
            values.update(status=ChunkStatus.DONE.value, finished_at=now, lease_token=None)
        return update_lease(conn, claim, **values)

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
            update_lease(conn, claim, **values)
            revoke_if_quiet(conn, claim.job_id)

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

    def waits_for_another_worker(self, chunk_id: int) -> bool:
        """The chunk is still queued for a runnable job: some other worker should take it."""
        with self.db.read() as conn:
            status = conn.execute(
                select(chunks.c.status)
                .join(jobs, jobs.c.id == chunks.c.job_id)
                .where(chunks.c.id == chunk_id, jobs.c.status.in_([s.value for s in RUNNABLE]))
            ).scalar_one_or_none()
        return status == ChunkStatus.QUEUED.value


def _leased(claim: Claim) -> ColumnElement[bool]:
    """The lease guard: the chunk is still LEASED under this claim's token."""
    return and_(
        chunks.c.id == claim.chunk_id,
        chunks.c.lease_token == claim.token,
        chunks.c.status == ChunkStatus.LEASED.value,
    )


def update_lease(conn: Connection, claim: Claim, **values: Any) -> bool:
    """Update the claimed chunk if the lease still holds; False when it was lost."""
    return conn.execute(update(chunks).where(_leased(claim)).values(**values)).rowcount == 1


def start_in(conn: Connection, job_id: int, now: datetime) -> None:
    """PENDING -> STARTED inside the caller's transaction (a pull worker's first reservation)."""
    _start(conn, job_id, now)


def _start(conn: Connection, job_id: int, now: datetime) -> None:
    """PENDING -> STARTED on the first claimed chunk; queue time is set here, once."""
    submitted_at = conn.execute(select(jobs.c.submitted_at).where(jobs.c.id == job_id)).scalar_one_or_none()
    lifecycle.transition(
        conn,
        job_id,
        JobStatus.STARTED,
        "a worker started the first chunk",
        now=now,
        values={"started_at": now, "queue_time_ms": ms_between(submitted_at, now)},
    )


def _context(conn: Connection, job_id: int) -> JobContext | None:
    row = conn.execute(
        select(
            jobs.c.id,
            jobs.c.status,
            jobs.c.config,
            jobs.c.explain,
            jobs.c.delay,
            jobs.c.deadline_at,
            jobs.c.output,
            jobs.c.secret,
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
        output=row.output,
        secret=row.secret,
    )


def revoke_if_quiet(conn: Connection, job_id: int) -> lifecycle.Transitioned | None:
    """A CANCELING job with no chunk in flight any more becomes REVOKED."""
    status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()
    if status != JobStatus.CANCELING.value or lifecycle.has_leased_chunks(conn, job_id):
        return None
    return lifecycle.finish(conn, job_id, JobStatus.REVOKED, "canceled; workers stopped")
