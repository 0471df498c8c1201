"""Chunked file inputs of OPEN jobs (Modzy's ``POST /api/jobs/{id}/{item}/{input}``).

Chunks are staged in ``job_uploads``, apart from the items. Closing the job streams each input's
chunks (one at a time, never a whole input in memory) to the caller, which writes them to the
blob store; the items (refs, no bytes) are written, the staged chunks dropped and the job queued
in one transaction. A job that is never closed keeps no half-written items, and canceling it
drops what was staged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from conveyor.clock import utcnow
from conveyor.domain.access import Scope
from conveyor.domain.status import JobStatus
from conveyor.errors import Conflict, NotFound, TooLarge
from conveyor.store import bulk
from conveyor.store.database import Database
from conveyor.store.jobs import ITEM_INSERT_BATCH, JobRepository, Queued, scope_clauses
from conveyor.store.tables import job_uploads, jobs


@dataclass(frozen=True)
class UploadCaps:
    max_input_bytes: int
    max_job_bytes: int
    max_inputs: int


@dataclass(frozen=True)
class AssembledInput:
    """One uploaded input: its size, and its chunks in arrival order (read from the database one
    at a time by ``chunks()``, valid during the close only)."""

    item: str
    input: str
    size: int
    chunks: Callable[[], Iterator[bytes]]


# Turns the assembled inputs into item rows (raising InvalidInput/TooLarge to abort the close):
# returns (rows, total bytes, count per kind).
RowBuilder = Callable[[list[AssembledInput]], tuple[list[dict[str, Any]], int, dict[str, int]]]


def is_open(input_summary: Any) -> bool:
    return isinstance(input_summary, dict) and bool(input_summary.get("open"))


class UploadRepository:
    def __init__(self, db: Database, jobs_repo: JobRepository) -> None:
        self.db = db
        self.jobs = jobs_repo
        self.dialect = bulk.Dialect(db.dialect)

    def _lock_open(self, conn: Connection, scope: Scope, job_id: int) -> dict[str, Any]:
        """Lock an OPEN job's row; returns its input summary (which counts what is staged)."""
        row = conn.execute(
            select(jobs.c.status, jobs.c.input_summary)
            .where(jobs.c.id == job_id, *scope_clauses(scope))
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        if row.status != JobStatus.CREATED.value or not is_open(row.input_summary):
            raise Conflict(
                f"Job {job_id} is not open for file inputs (it is {row.status}); open a job by "
                "submitting it without `input`, upload, then close it.",
                status=row.status,
            )
        return dict(row.input_summary)

    def append(
        self, scope: Scope, job_id: int, item: str, input_name: str, data: bytes, caps: UploadCaps
    ) -> int:
        """Stage one chunk; returns the input's size so far. Over a cap: 413 and nothing stored."""
        with self.db.write() as conn:
            summary = self._lock_open(conn, scope, job_id)
            # Index lookups only (ix_job_uploads_job_item); job-wide totals live in the summary, so
            # that a job of many files does not re-scan its staged chunks on every append.
            so_far = conn.execute(
                select(func.sum(func.length(job_uploads.c.data))).where(
                    job_uploads.c.job_id == job_id,
                    job_uploads.c.item == item,
                    job_uploads.c.input == input_name,
                )
            ).scalar()
            known_item = conn.execute(
                select(job_uploads.c.id)
                .where(job_uploads.c.job_id == job_id, job_uploads.c.item == item)
                .limit(1)
            ).first()
            input_size = int(so_far or 0) + len(data)
            job_size = int(summary.get("staged_bytes", 0)) + len(data)
            items = int(summary.get("staged_items", 0)) + (0 if known_item else 1)
            if input_size > caps.max_input_bytes:
                raise TooLarge(
                    f"Input {item}/{input_name} would be {input_size} bytes, over the "
                    f"{caps.max_input_bytes}-byte cap per input.",
                    input=f"{item}/{input_name}",
                )
            if job_size > caps.max_job_bytes:
                raise TooLarge(f"The job's inputs would exceed the cap of {caps.max_job_bytes} bytes.")
            if items > caps.max_inputs:
                raise TooLarge(f"More than the cap of {caps.max_inputs} inputs per job.")
            conn.execute(
                insert(job_uploads).values(
                    job_id=job_id, item=item, input=input_name, data=data, created_at=utcnow()
                )
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(input_summary={**summary, "staged_items": items, "staged_bytes": job_size})
            )
        return input_size

    def close(
        self, scope: Scope, job_id: int, build_rows: RowBuilder, *, blob_prefix: str | None = None
    ) -> Queued:
        """Turn the staged chunks into items and queue the job, all or nothing. ``blob_prefix``:
        where ``build_rows`` put the inputs' bytes (recorded on the job, deleted with it)."""
        with self.db.write() as conn:
            self._lock_open(conn, scope, job_id)
            first = func.min(job_uploads.c.id).label("first")
            staged = conn.execute(
                select(
                    job_uploads.c.item,
                    job_uploads.c.input,
                    first,
                    func.sum(func.length(job_uploads.c.data)).label("size"),
                )
                .where(job_uploads.c.job_id == job_id)
                .group_by(job_uploads.c.item, job_uploads.c.input)
                .order_by(first)
            ).all()
            inputs = [
                AssembledInput(row.item, row.input, int(row.size or 0), self._reader(conn, job_id, row))
                for row in staged
            ]
            rows, total_bytes, kinds = build_rows(inputs)
            for first_row in range(0, len(rows), ITEM_INSERT_BATCH):
                bulk.insert_items(conn, self.dialect, job_id, rows[first_row : first_row + ITEM_INSERT_BATCH])
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    total=len(rows),
                    pending=len(rows),
                    input_byte_amount=total_bytes,
                    input_summary={"kinds": kinds, "count": len(rows), "open": False},
                    **({"blob_prefix": blob_prefix} if blob_prefix is not None else {}),
                )
            )
            conn.execute(delete(job_uploads).where(job_uploads.c.job_id == job_id))
            return self.jobs.queue_created(conn, job_id, "closed: file inputs complete")

    @staticmethod
    def _reader(conn: Connection, job_id: int, staged: Any) -> Callable[[], Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            ids = conn.execute(
                select(job_uploads.c.id)
                .where(
                    job_uploads.c.job_id == job_id,
                    job_uploads.c.item == staged.item,
                    job_uploads.c.input == staged.input,
                )
                .order_by(job_uploads.c.id)
            ).scalars()
            for chunk_id in list(ids):  # one chunk's bytes in memory at a time
                yield bytes(
                    conn.execute(select(job_uploads.c.data).where(job_uploads.c.id == chunk_id)).scalar_one()
                )

        return chunks

    def discard(self, job_id: int) -> None:
        """Drop whatever was staged for a job (after it was canceled)."""
        with self.db.write() as conn:
            conn.execute(delete(job_uploads).where(job_uploads.c.job_id == job_id))
