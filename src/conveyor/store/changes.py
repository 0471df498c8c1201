"""The change feed: what happened to jobs since a point, read from the shared database.

Workers (local processes or Celery workers on other hosts) write job_events, job_logs and job
counters to the one database, so reading changes from it works the same in embedded and
distributed mode. The event hub (``services/events.py``) calls ``poll`` a few times a second for
the whole process; streams call ``replay`` once when a client resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, or_, select

from conveyor.domain.access import Scope
from conveyor.store.database import Database
from conveyor.store.jobs import JobRepository, scope_clauses
from conveyor.store.tables import job_events, job_logs, jobs

POLL_BATCH = 1000


@dataclass(frozen=True)
class Cursor:
    """A position in the two append-only streams: the last job_events id and job_logs id seen.

    Written on the wire as ``<event id>.<log id>`` (the SSE ``id:`` field).
    """

    event_id: int = 0
    log_id: int = 0

    def __str__(self) -> str:
        return f"{self.event_id}.{self.log_id}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        event_part, _, log_part = text.strip().partition(".")
        if not (event_part.isdigit() and log_part.isdigit()):
            return None
        return cls(int(event_part), int(log_part))

    def advance(self, *, event_id: int = 0, log_id: int = 0) -> Cursor:
        return Cursor(max(self.event_id, event_id), max(self.log_id, log_id))


@dataclass
class Changes:
    """One poll's result: new transitions and log lines (with their job's tenant), changed jobs."""

    events: list[RowMapping]
    logs: list[RowMapping]
    jobs: list[RowMapping]


def _event_query() -> Any:
    return select(
        job_events, jobs.c.account_id.label("account_id"), jobs.c.project_id.label("project_id")
    ).join(jobs, jobs.c.id == job_events.c.job_id)


def _log_query() -> Any:
    return select(
        job_logs, jobs.c.account_id.label("account_id"), jobs.c.project_id.label("project_id")
    ).join(jobs, jobs.c.id == job_logs.c.job_id)


class ChangeFeed:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One consistent view for the three reads of a poll, so that a transition and the job row it
        changed arrive together (PostgreSQL's default READ COMMITTED gives each statement its own
        snapshot; a SQLite read transaction already is one)."""
        with self.db.engine.connect() as conn:
            if not self.db.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def head(self) -> Cursor:
        """The newest ids now: a stream that starts here sees only what happens from now on."""
        with self.db.read() as conn:
            event_id = conn.execute(select(func.max(job_events.c.id))).scalar()
            log_id = conn.execute(select(func.max(job_logs.c.id))).scalar()
        return Cursor(int(event_id or 0), int(log_id or 0))

    def poll(
        self,
        after: Cursor,
        *,
        event_gaps: Sequence[int] = (),
        log_gaps: Sequence[int] = (),
        jobs_since: datetime | None,
    ) -> Changes:
        """Rows past ``after`` (plus ids once skipped as gaps, which a slower transaction may have
        committed since), and jobs updated at or after ``jobs_since`` (None: skip that query)."""
        with self._snapshot() as conn:
            events = self._new_rows(conn, _event_query(), job_events, after.event_id, event_gaps)
            logs = self._new_rows(conn, _log_query(), job_logs, after.log_id, log_gaps)
            changed: list[RowMapping] = []
            if jobs_since is not None:
                changed = JobRepository.fetch_rows(
                    conn, [jobs.c.updated_at >= jobs_since], order_by=[jobs.c.updated_at], limit=POLL_BATCH
                )
        return Changes(events, logs, changed)

    @staticmethod
    def _new_rows(
        conn: Connection, query: Any, table: Any, after_id: int, gaps: Sequence[int]
    ) -> list[RowMapping]:
        condition = table.c.id > after_id
        if gaps:
            condition = or_(condition, table.c.id.in_(list(gaps)))
        return list(conn.execute(query.where(condition).order_by(table.c.id).limit(POLL_BATCH)).mappings())

    def current_jobs(self, job_ids: Sequence[int]) -> list[RowMapping]:
        with self.db.read() as conn:
            return JobRepository.fetch_rows(conn, [jobs.c.id.in_(list(job_ids))])

    def replay(
        self, scope: Scope, after: Cursor, *, job_id: int | None, project_id: int | None, limit: int
    ) -> Changes:
        """What a resuming stream missed: transitions and log lines past ``after`` in its scope,
        and the current rows of the jobs they belong to."""
        where = scope_clauses(scope)
        if job_id is not None:
            where.append(jobs.c.id == job_id)
        if project_id is not None:
            where.append(jobs.c.project_id == project_id)
        with self.db.read() as conn:
            events = list(
                conn.execute(
                    _event_query()
                    .where(job_events.c.id > after.event_id, *where)
                    .order_by(job_events.c.id)
                    .limit(limit)
                ).mappings()
            )
            logs = list(
                conn.execute(
                    _log_query()
                    .where(job_logs.c.id > after.log_id, *where)
                    .order_by(job_logs.c.id)
                    .limit(limit)
                ).mappings()
            )
            touched = sorted({r["job_id"] for r in events} | {r["job_id"] for r in logs})
            rows = JobRepository.fetch_rows(conn, [jobs.c.id.in_(touched)]) if touched else []
        return Changes(events, logs, rows)
