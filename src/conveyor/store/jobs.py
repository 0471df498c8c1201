"""Job repository: the domain verbs on jobs (create, run, cancel, retry, delete) and reads.

``create`` takes a typed ``NewJob`` (built by ``conveyor.services.submission``); every query on
``jobs`` is kept inside the caller's ``conveyor.domain.access.Scope`` by ``scope_clauses``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    RowMapping,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    type_coerce,
    update,
)

from conveyor.clock import utcnow
from conveyor.domain.access import Scope
from conveyor.domain.pull import ASYNC_API
from conveyor.domain.status import RUNNABLE, TERMINAL, ChunkKind, ChunkStatus, ItemStatus, JobStatus
from conveyor.errors import Conflict, NotFound
from conveyor.store import bulk, lifecycle
from conveyor.store.database import Database
from conveyor.store.rawread import OneRowRead
from conveyor.store.tables import (
    api_keys,
    chunks,
    items,
    job_events,
    job_logs,
    jobs,
    output_shards,
    pipelines,
    projects,
)

ITEM_INSERT_BATCH = 5000
#: Every job column but the encrypted per-job credentials, which no read ever returns.
PRESENTED_JOB_COLUMNS = [c for c in jobs.c if c.name != "secret"]


def scope_clauses(scope: Scope) -> list[Any]:
    """The WHERE clauses that keep a query on ``jobs`` inside the caller's scope."""
    out: list[Any] = [jobs.c.account_id == scope.account_id]
    if scope.project_ids is not None:
        out.append(jobs.c.project_id.in_(sorted(scope.project_ids)))
    return out


START_NOW = "start_now"  # the cause of a job's CREATED -> PENDING when it is submitted started


@dataclass(frozen=True)
class NewJob:
    """A job to create, as the submission built it; its items come alongside as rows, and its
    counters (``total``, ``pending``) are the number of those rows."""

    name: str
    account_id: int
    project_id: int
    pipeline_id: int | None
    job_type: str
    dispatch_mode: str
    max_failed_ratio: float
    delay: float = 0.0
    limit: int | None = None
    shuffle: bool = False
    timeout_ms: int | None = None
    explain: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    input_summary: dict[str, Any] = field(default_factory=dict)  # kinds, count; `open` for uploads
    input_byte_amount: int = 0
    submitted_by: str | None = None  # the submitting key's public prefix
    # What the job runs over when it comes from stored inputs (a collection, or one stored item).
    source_collection_id: int | None = None
    source_collection: dict[str, Any] | None = None
    source_item: dict[str, Any] | None = None
    # Inputs by reference (migration 0009): what the `collect` stage lists, where results go,
    # the blob-store prefix of the request's bytes, encrypted per-job credentials.
    collect: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    blob_prefix: str | None = None
    secret: str | None = field(default=None, repr=False)

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class JobDetail:
    """One job as its detail shows it, read in one statement: the row (with its pipeline,
    project and ``submitted_by_name``, the submitting key's name), its newest log lines (newest
    first) and its first items' input descriptors (``seq`` order, no data)."""

    row: Mapping[str, Any]
    logs: Sequence[Mapping[Any, Any]]
    inputs: Sequence[Mapping[Any, Any]]


def _job_rows_select(*, with_submitter: bool = False) -> Any:
    """Job rows joined with their pipeline and project (and the submitting key's name)."""
    joined = jobs.outerjoin(pipelines, pipelines.c.id == jobs.c.pipeline_id).join(
        projects, projects.c.id == jobs.c.project_id
    )
    extra = []
    if with_submitter:
        joined = joined.outerjoin(
            api_keys,
            (api_keys.c.prefix == jobs.c.submitted_by) & (api_keys.c.account_id == jobs.c.account_id),
        )
        extra.append(api_keys.c.name.label("submitted_by_name"))
    return select(
        *PRESENTED_JOB_COLUMNS,  # never the job's encrypted credentials
        pipelines.c.slug.label("pipeline_slug"),
        pipelines.c.name.label("pipeline_name"),
        pipelines.c.description.label("pipeline_description"),
        pipelines.c.version.label("pipeline_version"),
        pipelines.c.version_name.label("pipeline_version_name"),
        pipelines.c.stages.label("pipeline_stages"),
        pipelines.c.image_classification_model.label("image_classification_model"),
        pipelines.c.created_at.label("pipeline_created_at"),
        pipelines.c.updated_at.label("pipeline_updated_at"),
        projects.c.name.label("project_name"),
        projects.c.slug.label("project_slug"),
        *extra,
    ).select_from(joined)


JOB_ROWS = _job_rows_select()
INPUT_COLUMNS = (items.c.job_id, items.c.seq, items.c.name, items.c.kind, items.c.byte_size)
LOG_COLUMNS = (job_logs.c.id, job_logs.c.job_id, job_logs.c.created_at, job_logs.c.level, job_logs.c.message)
LOG_NAMES = tuple(column.name for column in LOG_COLUMNS)
INPUT_NAMES = tuple(column.name for column in INPUT_COLUMNS)


def _rows_as_json(dialect: str, inner: Any, label: str) -> Any:
    """``inner``'s rows (a correlated select) as ONE column of the job's row: a JSON array of
    arrays, in no particular order (``_json_rows`` sorts them back). The detail is then one
    statement, one round trip on PostgreSQL, and needs no transaction for a consistent read."""
    block = inner.subquery()
    if dialect == "postgresql":
        rows = func.json_agg(func.json_build_array(*block.c))
        aggregated = func.coalesce(rows, literal_column("'[]'::json"))
    else:  # SQLite: the same in its JSON1 functions
        aggregated = func.coalesce(func.json_group_array(func.json_array(*block.c)), "[]")
    return type_coerce(select(aggregated).scalar_subquery(), JSON).label(label)


def _detail_statements(dialect: str) -> dict[tuple[str, bool], Any]:
    """The job detail's select, by id or uuid, account-wide or narrowed to some projects, with
    the newest ``:lines`` log lines and the first ``:inputs`` items' input descriptors folded in.

    Built once per dialect with bound parameters and reused: a status read is the hottest
    request, and building a select of ~50 columns and computing its cache key (which SQLAlchemy
    memoizes per statement object) cost as much as running it.
    """
    recent_logs = _rows_as_json(
        dialect,
        select(*LOG_COLUMNS)
        .where(job_logs.c.job_id == jobs.c.id)
        .order_by(job_logs.c.id.desc())
        .limit(bindparam("lines", type_=Integer))
        .correlate(jobs),
        "recent_logs",
    )
    first_inputs = _rows_as_json(
        dialect,
        select(*INPUT_COLUMNS)
        .where(items.c.job_id == jobs.c.id, items.c.seq < bindparam("inputs", type_=Integer))
        .order_by(items.c.seq)
        .correlate(jobs),
        "first_inputs",
    )
    base = _job_rows_select(with_submitter=True).add_columns(recent_logs, first_inputs)
    out = {}
    for by, column in (("id", jobs.c.id), ("uuid", jobs.c.uuid)):
        where = base.where(column == bindparam("key"), jobs.c.account_id == bindparam("account_id"))
        out[by, False] = where
        out[by, True] = where.where(jobs.c.project_id.in_(bindparam("project_ids", expanding=True)))
    return out


JOB_DETAIL = {dialect: _detail_statements(dialect) for dialect in ("postgresql", "sqlite")}


def _tag_statements() -> dict[str, Any]:
    """The ETag reads of JobRepository.tag (by id: uuid, version, newest log id) and tag_by_uuid
    (by uuid: version, status), with ``key`` and ``account_id`` parameters."""
    newest_log = (
        select(func.coalesce(func.max(job_logs.c.id), 0))
        .where(job_logs.c.job_id == jobs.c.id)
        .scalar_subquery()
        .label("newest_log")
    )
    account = jobs.c.account_id == bindparam("account_id")
    return {
        "id": select(jobs.c.uuid, jobs.c.version, newest_log).where(jobs.c.id == bindparam("key"), account),
        "uuid": select(jobs.c.version, jobs.c.status).where(jobs.c.uuid == bindparam("key"), account),
    }


TAG_STATEMENTS = _tag_statements()
TAG_NARROWED = {  # the same for a project-limited key
    by: statement.where(jobs.c.project_id.in_(bindparam("project_ids", expanding=True)))
    for by, statement in TAG_STATEMENTS.items()
}


def _json_rows(
    rows: list[list[Any]] | None, names: Sequence[str], *, order: str, newest_first: bool = False
) -> list[dict[str, Any]]:
    """A ``_rows_as_json`` column back as rows (dicts by column name, ``created_at`` an aware
    datetime), sorted by ``order``."""
    out = [dict(zip(names, row, strict=True)) for row in rows or ()]
    for row in out:
        if "created_at" in row:
            row["created_at"] = _json_time(row["created_at"])
    out.sort(key=lambda row: row[order], reverse=newest_first)
    return out


def _json_time(value: str) -> datetime:
    """A timestamp as JSON renders it (PostgreSQL: ISO 8601 with offset; SQLite: naive UTC text)."""
    stamp = datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@dataclass(frozen=True)
class Queued:
    """Chunks made ready by an action; the caller hands them to the dispatcher after commit."""

    job_id: int
    chunk_ids: list[int]


class JobRepository:
    def __init__(self, db: Database, *, chunk_size: int) -> None:
        self.db = db
        self.dialect = bulk.Dialect(db.dialect)
        self.chunk_size = chunk_size
        self.detail_statements = JOB_DETAIL["sqlite" if db.is_sqlite else "postgresql"]
        # The account-wide detail (every key but project-limited ones) on the driver connection:
        # the hottest read (store/rawread.py). Project-limited keys have an expanding IN.
        self.detail_reads = {
            by: OneRowRead(self.detail_statements[by, False], db.engine) for by in ("id", "uuid")
        }
        # The reads behind a 304 (the ETags' parts) the same way: a 304 must cost less than a 200.
        self.tag_reads = {by: OneRowRead(statement, db.engine) for by, statement in TAG_STATEMENTS.items()}

    # ----------------------------------------------------------------- writes
    def create(
        self,
        job: NewJob,
        item_rows: Iterable[dict[str, Any]],
        *,
        start: bool,
    ) -> tuple[int, Queued | None]:
        """Insert the job and all its items in one transaction; optionally queue it at once."""
        now = utcnow()
        rows = list(item_rows)
        failed = sum(1 for row in rows if row["status"] == ItemStatus.FAILURE.value)
        # Started at once: the job is written PENDING with both transitions' events and log lines
        # in one statement each (what _run would write after re-reading the row it just wrote).
        # Nobody sees it CREATED either way: it is all one transaction. Fewer round trips keep a
        # submit fast while reads keep the server's threads busy (issue 17's load).
        queued_values: dict[str, Any] = {}
        if start:
            deadline = now + timedelta(milliseconds=job.timeout_ms) if job.timeout_ms else None
            queued_values = {"status": JobStatus.PENDING.value, "submitted_at": now, "deadline_at": deadline}
        with self.db.write() as conn:
            job_id = conn.execute(
                insert(jobs)
                .values(
                    **{
                        "uuid": str(uuid.uuid4()),
                        "status": JobStatus.CREATED.value,
                        "created_at": now,
                        "updated_at": now,
                        "stage_params": {},
                        "total": len(rows),
                        "pending": len(rows) - failed,
                        "failed": failed,  # manifest lines that are not inputs: failed from the start
                        **job.values(),
                        **queued_values,
                    }
                )
                .returning(jobs.c.id)
            ).scalar_one()
            for first in range(0, len(rows), ITEM_INSERT_BATCH):
                bulk.insert_items(conn, self.dialect, job_id, rows[first : first + ITEM_INSERT_BATCH])
            events = [{"from_status": None, "to_status": JobStatus.CREATED.value, "cause": "submitted"}]
            logs = [f'Created job #{job_id} "{job.name}"']
            if start:
                events.append(
                    {
                        "from_status": JobStatus.CREATED.value,
                        "to_status": JobStatus.PENDING.value,
                        "cause": START_NOW,
                    }
                )
                logs += [
                    lifecycle.transition_message(job_id, JobStatus.PENDING, START_NOW),
                    f"Running job #{job_id} (PENDING)",
                ]
            conn.execute(insert(job_events), [{"job_id": job_id, "created_at": now, **e} for e in events])
            conn.execute(
                insert(job_logs),
                [{"job_id": job_id, "created_at": now, "level": "INFO", "message": m} for m in logs],
            )
            queued = None
            if start:
                collect = job.collect is not None and not job.collect.get("done")
                chunk_ids = self._add_chunks(
                    conn,
                    job_id,
                    self._item_ranges(len(rows)),
                    delay=job.delay,
                    collect=collect,
                    now=now,
                    mode=job.dispatch_mode,
                )
                queued = Queued(job_id, chunk_ids)
        return job_id, queued

    def _item_ranges(self, total: int) -> list[tuple[int, int, int]]:
        """(first seq, last seq, count) of each items chunk of a job of ``total`` items."""
        return [
            (first, min(first + self.chunk_size, total) - 1, min(self.chunk_size, total - first))
            for first in range(0, total, self.chunk_size)
        ]

    def run(self, scope: Scope, job_id: int) -> Queued:
        with self.db.write() as conn:
            self._require(conn, scope, job_id)
            return self._run(conn, job_id, "run requested")

    def queue_created(self, conn: Connection, job_id: int, cause: str) -> Queued:
        """CREATED -> PENDING inside the caller's transaction (e.g. closing a job's uploads)."""
        return self._run(conn, job_id, cause)

    def _run(self, conn: Connection, job_id: int, cause: str) -> Queued:
        job = conn.execute(
            select(jobs.c.total, jobs.c.failed, jobs.c.delay, jobs.c.timeout_ms, jobs.c.collect).where(
                jobs.c.id == job_id
            )
        ).one()
        now = utcnow()
        deadline = now + timedelta(milliseconds=job.timeout_ms) if job.timeout_ms else None
        moved = lifecycle.transition(
            conn,
            job_id,
            JobStatus.PENDING,
            cause,
            now=now,
            values={"submitted_at": now, "deadline_at": deadline, "pending": job.total - job.failed},
        )
        if moved is None:
            current = lifecycle.lock_job_status(conn, job_id)
            raise Conflict(f"Job {job_id} is {current}; only a CREATED job can be run.", status=str(current))
        lifecycle.add_log(conn, job_id, "INFO", f"Running job #{job_id} (PENDING)", now)
        collect = job.collect is not None and not job.collect.get("done")
        return Queued(
            job_id,
            self._add_chunks(
                conn, job_id, self._item_ranges(job.total), delay=job.delay, collect=collect, now=now
            ),
        )

    def _add_chunks(
        self,
        conn: Connection,
        job_id: int,
        ranges: Sequence[tuple[int, int, int]],
        *,
        delay: float,
        now: datetime,
        collect: bool = False,
        mode: str | None = None,
    ) -> list[int]:
        """The job's chunks: its delay stage, its collect stage (listing S3 prefixes and
        manifests into more items, which starts at once, beside the delay) and its items.
        ``mode``: the job's dispatch mode when the caller knows it (else read)."""
        if mode is None:
            mode = conn.execute(select(jobs.c.dispatch_mode).where(jobs.c.id == job_id)).scalar()
        if mode == ASYNC_API:
            # Pull workers reserve items one task at a time (store/pull.py): no chunks, so no
            # local, Celery or HTTP worker ever sees the job and nothing is left queued at its end.
            return []
        rows: list[dict[str, Any]] = []
        if delay > 0:
            rows.append(chunk_row(job_id, ChunkKind.DELAY, 0, -1, 0, ChunkStatus.QUEUED, now))
        if collect:
            rows.append(chunk_row(job_id, ChunkKind.COLLECT, 0, -1, 0, ChunkStatus.QUEUED, now))
        item_state = ChunkStatus.BLOCKED if delay > 0 else ChunkStatus.QUEUED
        rows.extend(chunk_row(job_id, ChunkKind.ITEMS, a, b, n, item_state, now) for a, b, n in ranges)
        if not rows:
            return []
        ids = conn.execute(
            insert(chunks).returning(chunks.c.id, sort_by_parameter_order=True), rows
        ).scalars()
        return [cid for cid, row in zip(ids, rows, strict=True) if row["status"] == ChunkStatus.QUEUED.value]

    def cancel(self, scope: Scope, job_id: int) -> JobStatus:
        """CREATED -> REVOKED at once; queued/running -> CANCELING, REVOKED once no worker holds a chunk."""
        with self.db.write() as conn:
            current = self._require(conn, scope, job_id)
            if current == JobStatus.CANCELING:
                return current
            if current == JobStatus.CREATED:
                lifecycle.finish(conn, job_id, JobStatus.REVOKED, "canceled before it ran")
                return JobStatus.REVOKED
            if current not in RUNNABLE:
                raise Conflict(f"Job {job_id} is {current}; it cannot be canceled.", status=str(current))
            now = utcnow()
            lifecycle.transition(
                conn,
                job_id,
                JobStatus.CANCELING,
                "cancel requested",
                now=now,
                values={"cancel_requested_at": now},
            )
            conn.execute(
                update(chunks)
                .where(
                    chunks.c.job_id == job_id,
                    chunks.c.status.in_([ChunkStatus.QUEUED.value, ChunkStatus.BLOCKED.value]),
                )
                .values(status=ChunkStatus.DROPPED.value, finished_at=now)
            )
            if not lifecycle.has_leased_chunks(conn, job_id):
                lifecycle.finish(conn, job_id, JobStatus.REVOKED, "canceled; no work in flight")
                return JobStatus.REVOKED
            return JobStatus.CANCELING

    def retry(self, scope: Scope, job_id: int) -> Queued:
        """Re-queue only the failed items of a finished job."""
        with self.db.write() as conn:
            current = self._require(conn, scope, job_id)
            if current not in TERMINAL:
                raise Conflict(
                    f"Job {job_id} is {current}; only a finished job can be retried.", status=str(current)
                )
            failed_seqs = list(
                conn.execute(
                    select(items.c.seq)
                    .where(items.c.job_id == job_id, items.c.status == ItemStatus.FAILURE.value)
                    .order_by(items.c.seq)
                ).scalars()
            )
            if not failed_seqs:
                raise Conflict(f"Job {job_id} has no failed items to retry.", status=str(current))
            now = utcnow()
            timeout_ms = conn.execute(select(jobs.c.timeout_ms).where(jobs.c.id == job_id)).scalar_one()
            lifecycle.transition(
                conn,
                job_id,
                JobStatus.RETRY,
                f"retrying {len(failed_seqs)} failed items",
                now=now,
                values={
                    "failed": jobs.c.failed - len(failed_seqs),
                    "pending": jobs.c.pending + len(failed_seqs),
                    "finished_at": None,
                    "cancel_requested_at": None,
                    "deadline_at": now + timedelta(milliseconds=timeout_ms) if timeout_ms else None,
                },
            )
            conn.execute(
                update(items)
                .where(items.c.job_id == job_id, items.c.status == ItemStatus.FAILURE.value)
                .values(
                    status=ItemStatus.PENDING.value,
                    error=None,
                    result=None,
                    finished_at=None,
                    # a pull job's retried items start their deliveries afresh
                    reply_subject=None,
                    lease_expires_at=None,
                    deliveries=None,
                )
            )
            groups = [
                failed_seqs[i : i + self.chunk_size] for i in range(0, len(failed_seqs), self.chunk_size)
            ]
            ranges = [(group[0], group[-1], len(group)) for group in groups]
            return Queued(job_id, self._add_chunks(conn, job_id, ranges, delay=0, now=now))

    def delete(self, scope: Scope, job_id: int) -> str | None:
        """Delete a finished (or never queued) job's rows; returns its blob prefix, whose blobs
        the caller deletes once this has committed."""
        with self.db.write() as conn:
            current = self._require(conn, scope, job_id)
            if current not in TERMINAL and current != JobStatus.CREATED:
                raise Conflict(
                    f"Job {job_id} is {current}; cancel it before deleting it.", status=str(current)
                )
            prefix = conn.execute(select(jobs.c.blob_prefix).where(jobs.c.id == job_id)).scalar()
            for table in (job_logs, job_events, chunks, items, output_shards):
                conn.execute(delete(table).where(table.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return prefix

    # ----------------------------------------------------------------- reads
    def _require(self, conn: Connection, scope: Scope, job_id: int) -> JobStatus:
        row = conn.execute(
            select(jobs.c.status).where(jobs.c.id == job_id, *scope_clauses(scope)).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        return JobStatus(row.status)

    def id_for_uuid(self, scope: Scope, job_uuid: str) -> int:
        """The job id behind a ``jobIdentifier``; 404 when it is not the caller's to see."""
        with self.db.read() as conn:
            found = conn.execute(
                select(jobs.c.id).where(jobs.c.uuid == job_uuid, *scope_clauses(scope))
            ).scalar()
        if found is None:
            raise NotFound(f"Job {job_uuid} not found.", job_identifier=job_uuid)
        return int(found)

    def detail(
        self,
        scope: Scope,
        job_id: int | None = None,
        *,
        uuid: str | None = None,
        log_lines: int = 0,
        inputs: int = 0,
    ) -> JobDetail:
        """A job by id or by ``uuid`` (Modzy's ``jobIdentifier``) with its newest ``log_lines``
        log lines and first ``inputs`` items, in one read transaction; 404 outside the scope."""
        by = "id" if job_id is not None else "uuid"
        params: dict[str, Any] = {
            "key": job_id if job_id is not None else uuid,
            "account_id": scope.account_id,
            "lines": max(log_lines, 0),
            "inputs": max(inputs, 0),
        }
        row = self._one_row(self.detail_reads[by], self.detail_statements[by, True], params, scope)
        if row is None:
            if job_id is not None:
                raise NotFound(f"Job {job_id} not found.", job_id=job_id)
            raise NotFound(f"Job {uuid} not found.", job_identifier=uuid)
        logs = _json_rows(row["recent_logs"], LOG_NAMES, order="id", newest_first=True)
        first = _json_rows(row["first_inputs"], INPUT_NAMES, order="seq")
        return JobDetail(row, logs, first)

    def get(self, scope: Scope, job_id: int) -> RowMapping:
        with self.db.read() as conn:
            rows = self.fetch_rows(conn, [jobs.c.id == job_id, *scope_clauses(scope)])
        if not rows:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        return rows[0]

    def _one_row(
        self, raw: OneRowRead, narrowed: Any, params: dict[str, Any], scope: Scope
    ) -> Mapping[str, Any] | None:
        """A one-row read in ``scope``: ``raw`` on the driver connection for an account-wide
        scope; ``narrowed`` (the same select with ``project_id IN :project_ids``, expanding, which
        the raw read cannot take) through SQLAlchemy for a project-limited one. One statement:
        one round trip, no transaction."""
        if scope.project_ids is None:
            return raw.fetch(params)
        with self.db.read_one() as conn:
            found = conn.execute(narrowed, {**params, "project_ids": sorted(scope.project_ids)})
            row = found.mappings().first()
        return dict(row) if row is not None else None

    def _tag_row(self, by: str, key: Any, scope: Scope) -> Mapping[str, Any] | None:
        """One TAG_STATEMENTS read (``by`` id or uuid) in ``scope``."""
        params = {"key": key, "account_id": scope.account_id}
        return self._one_row(self.tag_reads[by], TAG_NARROWED[by], params, scope)

    def tag(self, scope: Scope, job_id: int) -> tuple[str, int, int]:
        """What the job's ETags are made of, in one indexed read: its uuid, its row ``version``
        (bumped by every update) and its newest log id (0 without logs). 404 outside the scope."""
        row = self._tag_row("id", job_id, scope)
        if row is None:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        return str(row["uuid"]), int(row["version"]), int(row["newest_log"])

    def tag_by_uuid(self, scope: Scope, job_uuid: str) -> tuple[int, JobStatus]:
        """(row version, status) of a job by its uuid, in one indexed read: what Modzy's job
        ETag is made of. 404 outside the scope."""
        row = self._tag_row("uuid", job_uuid, scope)
        if row is None:
            raise NotFound(f"Job {job_uuid} not found.", job_identifier=job_uuid)
        return int(row["version"]), JobStatus(row["status"])

    @staticmethod
    def fetch_rows(
        conn: Connection,
        where: Sequence[Any],
        order_by: Sequence[Any] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RowMapping]:
        """Job rows joined with their pipeline and project, for presentation."""
        query = JOB_ROWS.where(*where).order_by(*order_by)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return list(conn.execute(query).mappings())

    def recent_logs(self, job_id: int, limit: int) -> list[RowMapping]:
        if limit <= 0:
            return []
        with self.db.read() as conn:
            rows = conn.execute(
                select(job_logs)
                .where(job_logs.c.job_id == job_id)
                .order_by(job_logs.c.id.desc())
                .limit(limit)
            ).mappings()
            return list(rows)

    def logs(
        self, scope: Scope, job_id: int, *, after: int, levels: Sequence[str] | None, limit: int
    ) -> list[RowMapping]:
        with self.db.read() as conn:
            self._exists(conn, scope, job_id)
            query = select(job_logs).where(job_logs.c.job_id == job_id, job_logs.c.id > after)
            if levels is not None:
                query = query.where(job_logs.c.level.in_(levels))
            return list(conn.execute(query.order_by(job_logs.c.id).limit(limit)).mappings())

    def events(self, scope: Scope, job_id: int) -> list[RowMapping]:
        with self.db.read() as conn:
            self._exists(conn, scope, job_id)
            return list(
                conn.execute(
                    select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
                ).mappings()
            )

    def finished_items(self, job_id: int, *, page: int = 1000) -> Iterator[RowMapping]:
        """A job's finished items in ``seq`` order, read ``page`` rows at a time (no tenant scope:
        the caller checked it — the results export, or a data_export job when it was created)."""
        columns = [c for c in items.c if c.name != "data"]
        after = -1
        while True:
            with self.db.read() as conn:
                rows = list(
                    conn.execute(
                        select(*columns)
                        .where(
                            items.c.job_id == job_id,
                            items.c.seq > after,
                            items.c.status.in_(["SUCCESS", "FAILURE"]),
                        )
                        .order_by(items.c.seq)
                        .limit(page)
                    ).mappings()
                )
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["seq"]

    def exists(self, job_id: int) -> bool:
        with self.db.read() as conn:
            return conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is not None

    def item_data(self, item_id: int) -> tuple[bytes | None, str | None] | None:
        """An item's input bytes, or its ref when they are elsewhere (for a signed media URL: the
        caller has checked the signature); None when there is no such item."""
        with self.db.read() as conn:
            row = conn.execute(select(items.c.data, items.c.ref).where(items.c.id == item_id)).first()
        if row is None:
            return None
        return (bytes(row.data) if row.data is not None else None), row.ref

    def item_job_secret(self, item_id: int) -> str | None:
        """The sealed S3 credentials of an item's job (None: it has none), for the media route
        reading an ``s3://`` item for a worker that has no credentials (an HTTP worker)."""
        with self.db.read() as conn:
            return conn.execute(
                select(jobs.c.secret).join(items, items.c.job_id == jobs.c.id).where(items.c.id == item_id)
            ).scalar_one_or_none()

    def items(
        self, scope: Scope, job_id: int, *, statuses: Sequence[str] | None, after_seq: int, limit: int
    ) -> tuple[int, list[RowMapping]]:
        columns = [c for c in items.c if c.name != "data"]
        with self.db.read() as conn:
            self._exists(conn, scope, job_id)
            where = [items.c.job_id == job_id]
            if statuses:
                where.append(items.c.status.in_(statuses))
            count = conn.execute(select(func.count()).select_from(items).where(*where)).scalar_one()
            rows = conn.execute(
                select(*columns).where(*where, items.c.seq > after_seq).order_by(items.c.seq).limit(limit)
            ).mappings()
            return count, list(rows)

    def first_items(self, job_ids: Sequence[int], per_job: int) -> dict[int, list[RowMapping]]:
        """The first ``per_job`` items (no data) of each job, in one query: input descriptors."""
        if not job_ids or per_job <= 0:
            return {}
        out: dict[int, list[RowMapping]] = {job_id: [] for job_id in job_ids}
        with self.db.read() as conn:
            rows = conn.execute(
                select(*INPUT_COLUMNS)
                .where(items.c.job_id.in_(sorted(set(job_ids))), items.c.seq < per_job)
                .order_by(items.c.job_id, items.c.seq)
            ).mappings()
            for row in rows:
                out[row["job_id"]].append(row)
        return out

    def _exists(self, conn: Connection, scope: Scope, job_id: int) -> None:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, *scope_clauses(scope))).first() is None:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)


def chunk_row(
    job_id: int, kind: ChunkKind, first: int, last: int, count: int, status: ChunkStatus, now: datetime
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "kind": kind.value,
        "first_seq": first,
        "last_seq": last,
        "item_count": count,
        "status": status.value,
        "attempts": 0,
        "created_at": now,
    }
