"""Chunked file inputs of OPEN jobs (Modzy's ``POST /api/jobs/{id}/{item}/{input}``).

Chunks are staged in ``job_uploads``, apart from the items. Closing the job assembles them into
items and queues the job in one transaction; a job that is never closed keeps no half-written
items, and canceling it drops what was staged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from conveyor.clock import utcnow
from conveyor.domain.status import JobStatus
from conveyor.errors import Conflict, NotFound, TooLarge
from conveyor.store import bulk
from conveyor.store.database import Database
from conveyor.store.jobs import ITEM_INSERT_BATCH, JobRepository, Queued, Scope
from conveyor.store.tables import job_uploads, jobs


@dataclass(frozen=True)
class UploadCaps:
    max_input_bytes: int
    max_job_bytes: int
    max_inputs: int


@dataclass(frozen=True)
class AssembledInput:
    """One uploaded input, all its chunks concatenated in arrival order."""

    item: str
    input: str
    data: bytes


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

    def _lock_open(self, conn: Connection, scope: Scope, job_id: int) -> None:
        row = conn.execute(
            select(jobs.c.status, jobs.c.input_summary)
            .where(jobs.c.id == job_id, *scope.clauses())
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

    def append(
        self, scope: Scope, job_id: int, item: str, input_name: str, data: bytes, caps: UploadCaps
    ) -> int:
        """Stage one chunk; returns the input's size so far. Over a cap: 413 and nothing stored."""
        with self.db.write() as conn:
            self._lock_open(conn, scope, job_id)
            sizes = conn.execute(
                select(job_uploads.c.item, job_uploads.c.input, func.sum(func.length(job_uploads.c.data)))
                .where(job_uploads.c.job_id == job_id)
                .group_by(job_uploads.c.item, job_uploads.c.input)
            ).all()
            input_size = sum(int(s or 0) for i, n, s in sizes if (i, n) == (item, input_name)) + len(data)
            job_size = sum(int(s or 0) for _, _, s in sizes) + len(data)
            items = {i for i, _, _ in sizes} | {item}
            if input_size > caps.max_input_bytes:
                raise TooLarge(
                    f"Input {item}/{input_name} would be {input_size} bytes, over the "
                    f"{caps.max_input_bytes}-byte cap per input.",
                    input=f"{item}/{input_name}",
                )
            if job_size > caps.max_job_bytes:
                raise TooLarge(f"The job's inputs would exceed the cap of {caps.max_job_bytes} bytes.")
            if len(items) > caps.max_inputs:
                raise TooLarge(f"More than the cap of {caps.max_inputs} inputs per job.")
            conn.execute(
                insert(job_uploads).values(
                    job_id=job_id, item=item, input=input_name, data=data, created_at=utcnow()
                )
            )
        return input_size

    def close(self, scope: Scope, job_id: int, build_rows: RowBuilder) -> Queued:
        """Assemble the staged chunks into items and queue the job, all or nothing."""
        with self.db.write() as conn:
            self._lock_open(conn, scope, job_id)
            assembled: dict[tuple[str, str], bytearray] = {}
            for row in conn.execute(
                select(job_uploads.c.item, job_uploads.c.input, job_uploads.c.data)
                .where(job_uploads.c.job_id == job_id)
                .order_by(job_uploads.c.id)
            ):
                assembled.setdefault((row.item, row.input), bytearray()).extend(row.data)
            inputs = [AssembledInput(i, n, bytes(b)) for (i, n), b in assembled.items()]
            rows, total_bytes, kinds = build_rows(inputs)
            for first in range(0, len(rows), ITEM_INSERT_BATCH):
                bulk.insert_items(conn, self.dialect, job_id, rows[first : first + ITEM_INSERT_BATCH])
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    total=len(rows),
                    pending=len(rows),
                    input_byte_amount=total_bytes,
                    input_summary={"kinds": kinds, "count": len(rows), "open": False},
                )
            )
            conn.execute(delete(job_uploads).where(job_uploads.c.job_id == job_id))
            return self.jobs.queue_created(conn, job_id, "closed: file inputs complete")

    def discard(self, job_id: int) -> None:
        """Drop whatever was staged for a job (after it was canceled)."""
        with self.db.write() as conn:
            conn.execute(delete(job_uploads).where(job_uploads.c.job_id == job_id))
