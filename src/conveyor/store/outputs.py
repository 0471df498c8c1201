"""Output repository: which shard files a job's output holds (``output_shards``) and the records
that go into them; the job's ``output`` document (uri, shard/item/byte totals, manifest).

Shards belong to a job's *original* items chunks: an items chunk whose seq range overlaps no
earlier items chunk of the job. A retry chunk (``JobRepository.retry``) takes failed items
from several of them, so its final write-back rewrites those chunks' shards instead of
adding one of its own: every item stays in exactly one shard. The ordinal in the shard's name
is the chunk's rank among the job's items chunks by id, so it never changes once the chunk
exists (retry chunks come later, after every original chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.orm import aliased

from conveyor.clock import utcnow
from conveyor.domain.status import TERMINAL, ChunkKind, ItemStatus
from conveyor.outputs import shard_name
from conveyor.store import lifecycle
from conveyor.store.database import Database
from conveyor.store.tables import chunks, items, jobs, output_shards

FINISHED = (ItemStatus.SUCCESS.value, ItemStatus.FAILURE.value)


@dataclass(frozen=True)
class ShardOwner:
    """An original items chunk of a job and the name of its shard."""

    chunk_id: int
    ordinal: int
    first_seq: int
    last_seq: int

    @property
    def name(self) -> str:
        return shard_name(self.ordinal)


@dataclass(frozen=True)
class ShardWritten:
    """A shard file the sink accepted, to record with the write-back that made it."""

    name: str
    chunk_id: int
    items: int
    bytes: int


@dataclass(frozen=True)
class EndedOutput:
    """A finished job with an output, as the sweeper's manifest step needs it."""

    job_id: int
    uuid: str
    name: str
    status: str
    output: dict[str, Any]
    finished_at: datetime | None
    total: int
    completed: int
    failed: int
    canceled: int


class OutputRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def owners(self, job_id: int, first_seq: int, last_seq: int) -> list[ShardOwner]:
        """The original items chunks whose shards hold the items of ``[first_seq, last_seq]``."""
        earlier = aliased(chunks)
        ordinal = (
            select(func.count())
            .select_from(earlier)
            .where(
                earlier.c.job_id == chunks.c.job_id,
                earlier.c.kind == ChunkKind.ITEMS.value,
                earlier.c.id <= chunks.c.id,
            )
            .scalar_subquery()
        )
        overlapped = (
            select(earlier.c.id)
            .where(
                earlier.c.job_id == chunks.c.job_id,
                earlier.c.kind == ChunkKind.ITEMS.value,
                earlier.c.id < chunks.c.id,
                earlier.c.first_seq <= chunks.c.last_seq,
                earlier.c.last_seq >= chunks.c.first_seq,
            )
            .exists()
        )
        with self.db.read() as conn:
            rows = conn.execute(
                select(chunks.c.id, ordinal, chunks.c.first_seq, chunks.c.last_seq)
                .where(
                    chunks.c.job_id == job_id,
                    chunks.c.kind == ChunkKind.ITEMS.value,
                    chunks.c.first_seq <= last_seq,
                    chunks.c.last_seq >= first_seq,
                    ~overlapped,
                )
                .order_by(chunks.c.id)
            ).all()
        return [ShardOwner(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def records(self, job_id: int, first_seq: int, last_seq: int) -> list[dict[str, Any]]:
        """Every item of the seq range but the canceled ones, as shard records (``status`` may
        still be PENDING: the caller merges in the outcomes it is about to write back)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    items.c.id,
                    items.c.seq,
                    items.c.name,
                    items.c.ref,
                    items.c.source,
                    items.c.status,
                    items.c.result,
                    items.c.error,
                )
                .where(
                    items.c.job_id == job_id,
                    items.c.seq >= first_seq,
                    items.c.seq <= last_seq,
                    items.c.status != ItemStatus.CANCELED.value,
                )
                .order_by(items.c.seq)
            ).all()
        return [
            {
                "name": r.name,
                "seq": r.seq,
                "item_id": r.id,
                "source": r.ref or r.source,
                "status": r.status,
                "result": r.result,
                "error": r.error,
            }
            for r in rows
        ]

    def finished_counts(self, job_id: int, owners: Sequence[ShardOwner]) -> dict[str, int]:
        """Finished items per owner's shard name (the sweeper's completeness check)."""
        out: dict[str, int] = {}
        with self.db.read() as conn:
            for owner in owners:
                out[owner.name] = conn.execute(
                    select(func.count())
                    .select_from(items)
                    .where(
                        items.c.job_id == job_id,
                        items.c.seq >= owner.first_seq,
                        items.c.seq <= owner.last_seq,
                        items.c.status.in_(FINISHED),
                    )
                ).scalar_one()
        return out

    def shards(self, job_id: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(output_shards.c.name, output_shards.c["items"], output_shards.c.bytes)
                .where(output_shards.c.job_id == job_id)
                .order_by(output_shards.c.name)
            ).all()
        return [{"name": r.name, "items": r.items, "bytes": r.bytes} for r in rows]

    def record_shards(self, job_id: int, written: Sequence[ShardWritten]) -> None:
        """Record shards written outside a worker's write-back (the sweeper's repairs)."""
        with self.db.write() as conn:
            record(conn, job_id, written, utcnow())

    # ------------------------------------------------------------- the sweeper's manifest step
    def ended(self, *, updated_since: datetime | None) -> list[EndedOutput]:
        """Finished jobs with an output, updated since the given time (all of them when None)."""
        query = select(
            jobs.c.id.label("job_id"),
            jobs.c.uuid,
            jobs.c.name,
            jobs.c.status,
            jobs.c.output,
            jobs.c.finished_at,
            jobs.c.total,
            jobs.c.completed,
            jobs.c.failed,
            jobs.c.canceled,
        ).where(jobs.c.output.is_not(None), jobs.c.status.in_([s.value for s in TERMINAL]))
        if updated_since is not None:
            query = query.where(jobs.c.updated_at >= updated_since)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(jobs.c.id)).all()
        return [EndedOutput(**{**r._asdict(), "output": dict(r.output)}) for r in rows if r.output]

    def set_manifest(
        self,
        job_id: int,
        finished_at: datetime | None,
        changes: dict[str, Any],
        *,
        log: tuple[str, str] | None = None,
    ) -> bool:
        """Merge ``changes`` into the job's output (and add a ``(level, message)`` log line) if the
        job still is the finish the manifest describes (not retried meanwhile); whether it was."""
        now = utcnow()
        with self.db.write() as conn:
            row = conn.execute(
                select(jobs.c.output, jobs.c.finished_at, jobs.c.status)
                .where(jobs.c.id == job_id)
                .with_for_update()
            ).first()
            if row is None or row.output is None or row.finished_at != finished_at:
                return False
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(output={**dict(row.output), **changes}, updated_at=now)
            )
            if log is not None:
                lifecycle.add_log(conn, job_id, log[0], log[1], now)
        return True


def record(conn: Connection, job_id: int, written: Sequence[ShardWritten], now: datetime) -> None:
    """Upsert the shards by (job, name) and refresh the totals in ``jobs.output``, inside the
    caller's transaction (a worker's final write-back holds the job row already)."""
    if not written:
        return
    for shard in written:
        values = {"chunk_id": shard.chunk_id, "items": shard.items, "bytes": shard.bytes, "written_at": now}
        updated = conn.execute(
            update(output_shards)
            .where(and_(output_shards.c.job_id == job_id, output_shards.c.name == shard.name))
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(insert(output_shards).values(job_id=job_id, name=shard.name, **values))
    count, n_items, n_bytes = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(output_shards.c["items"]), 0),
            func.coalesce(func.sum(output_shards.c.bytes), 0),
        ).where(output_shards.c.job_id == job_id)
    ).one()
    current = conn.execute(select(jobs.c.output).where(jobs.c.id == job_id)).scalar_one_or_none() or {}
    totals = {"shards": int(count), "items": int(n_items), "bytes": int(n_bytes)}
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(output={**dict(current), **totals}))
