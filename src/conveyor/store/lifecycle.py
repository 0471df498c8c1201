"""Guarded job transitions: the only code that writes ``jobs.status``.

Every change is a compare-and-set on the current state, checked against the domain's
transition table, recorded in ``job_events`` in the same transaction. A late write
(a worker that lost its lease, a second cancel, a sweeper racing a worker) finds the
state moved on and changes nothing.

Lock order, to stay deadlock-free on PostgreSQL: job row first, then its chunks, then items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from conveyor.clock import ms_between, utcnow
from conveyor.domain.status import TERMINAL, ChunkStatus, ItemStatus, JobStatus, allowed_sources
from conveyor.store.tables import chunks, items, job_events, job_logs, jobs

OPEN_CHUNK_STATES = (ChunkStatus.BLOCKED, ChunkStatus.QUEUED, ChunkStatus.LEASED)


@dataclass(frozen=True)
class Transitioned:
    job_id: int
    source: JobStatus
    target: JobStatus


def lock_job_status(conn: Connection, job_id: int) -> JobStatus | None:
    row = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id).with_for_update()).first()
    return JobStatus(row.status) if row else None


def add_log(conn: Connection, job_id: int, level: str, message: str, at: datetime | None = None) -> None:
    conn.execute(
        insert(job_logs).values(job_id=job_id, created_at=at or utcnow(), level=level, message=message)
    )


def transition(
    conn: Connection,
    job_id: int,
    target: JobStatus,
    cause: str,
    *,
    values: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Transitioned | None:
    """Move the job to ``target`` if the table allows it from its current state.

    Returns None (and writes nothing) when the job is missing or the move is not allowed.
    """
    now = now or utcnow()
    current = lock_job_status(conn, job_id)
    if current is None or current not in allowed_sources(target):
        return None
    updated = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == current.value)
        .values(status=target.value, updated_at=now, **(values or {}))
    ).rowcount
    if updated != 1:
        return None
    conn.execute(
        insert(job_events).values(
            job_id=job_id, created_at=now, from_status=current.value, to_status=target.value, cause=cause
        )
    )
    add_log(conn, job_id, "INFO", transition_message(job_id, target, cause), now)
    return Transitioned(job_id, current, target)


def transition_message(job_id: int, target: JobStatus, cause: str) -> str:
    """The log line of a transition."""
    return f"Changing status of job {job_id} to {target} ({cause})"


def finish(conn: Connection, job_id: int, target: JobStatus, cause: str) -> Transitioned | None:
    """Enter a terminal state: drop the job's open chunks and cancel its unprocessed items.

    Counters stay consistent at that instant: completed + failed + canceled = total.
    Items finished so far are kept. A worker still holding a dropped chunk loses its lease,
    so its late results are discarded rather than counted.
    """
    assert target in TERMINAL
    now = utcnow()
    current = lock_job_status(conn, job_id)
    if current is None or current not in allowed_sources(target):
        return None
    conn.execute(
        update(chunks)
        .where(chunks.c.job_id == job_id, chunks.c.status.in_([s.value for s in OPEN_CHUNK_STATES]))
        .values(status=ChunkStatus.DROPPED.value, lease_token=None, finished_at=now)
    )
    canceled = conn.execute(
        update(items)
        .where(items.c.job_id == job_id, items.c.status == ItemStatus.PENDING.value)
        .values(status=ItemStatus.CANCELED.value, finished_at=now)
    ).rowcount
    started_at = conn.execute(select(jobs.c.started_at).where(jobs.c.id == job_id)).scalar_one()
    done = transition(
        conn,
        job_id,
        target,
        cause,
        now=now,
        values={
            "pending": jobs.c.pending - canceled,
            "canceled": jobs.c.canceled + canceled,
            "finished_at": now,
            "elapsed_time_ms": ms_between(started_at, now),
            "secret": None,  # per-job credentials are erased when the job ends
        },
    )
    if done is not None:
        add_log(conn, job_id, "INFO", f"Finished job #{job_id} ({target})", now)
    return done


def has_leased_chunks(conn: Connection, job_id: int) -> bool:
    count = conn.execute(
        select(func.count())
        .select_from(chunks)
        .where(chunks.c.job_id == job_id, chunks.c.status == ChunkStatus.LEASED.value)
    ).scalar_one()
    return bool(count)


def collecting(plan: dict[str, Any] | None) -> bool:
    """Whether the job's collect stage is still listing inputs (its ``total`` may still grow)."""
    return plan is not None and not plan.get("done")


def finish_if_complete(conn: Connection, job_id: int) -> Transitioned | None:
    """After counters changed: finish the job if all items are done or the failure policy is broken.

    Neither is decided while the collect stage still lists inputs: ``total`` is not final then.
    """
    row = conn.execute(
        select(
            jobs.c.status,
            jobs.c.total,
            jobs.c.pending,
            jobs.c.failed,
            jobs.c.max_failed_ratio,
            jobs.c.collect,
        ).where(jobs.c.id == job_id)
    ).first()
    if row is None:
        return None
    status = JobStatus(row.status)
    if status not in (JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY) or collecting(row.collect):
        return None
    over_budget = row.failed > row.max_failed_ratio * row.total
    if over_budget:
        ratio = row.max_failed_ratio
        cause = f"{row.failed} of {row.total} items failed, more than max_failed_ratio={ratio} allows"
        if row.pending:
            cause += "; stopping early"
        return finish(conn, job_id, JobStatus.FAILURE, cause)
    if row.pending == 0:
        return finish(conn, job_id, JobStatus.SUCCESS, "all items processed")
    return None
