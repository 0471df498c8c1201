"""The worker registry: every worker reports itself with ``seen``; ``list`` and ``live_for`` read.

``seen`` sits on hot paths (after every chunk a local worker runs, every lease call of an HTTP
worker, every ``/tasks/`` and ``/result/`` of a pull worker), so it is throttled in memory: a
worker's row is written at once when its job changes or it (re)starts, otherwise at most once
per ``min_interval_seconds`` while it reports items, and only every ``keepalive`` (a third of its
lease, at most 10 s) while nothing changes. The items reported between two writes are added up
and go out with the next one; a process killed in between loses at most that last second's count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, false, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError

from conveyor.clock import utcnow
from conveyor.domain.access import Scope
from conveyor.domain.workers import WorkerKind, WorkerState, lost_after, worker_state
from conveyor.errors import InvalidInput
from conveyor.store.database import Database
from conveyor.store.tables import jobs, workers

#: Rows of workers silent for this long are deleted (when a new worker first reports itself).
FORGET_AFTER = timedelta(days=7)
MAX_KEEPALIVE_SECONDS = 10.0
NAME_LENGTH = 200
HOST_LENGTH = 255

_Identity = tuple[str, str, int | None]


@dataclass
class _Beat:
    """What this process last wrote for one worker, and the items reported since."""

    row_id: int | None = None
    written_at: float = float("-inf")  # time.monotonic()
    job_id: int | None = None
    pending_items: int = 0


@dataclass(frozen=True)
class WorkerRow:
    id: int
    kind: str
    name: str
    host: str
    account_id: int | None
    key_id: int | None
    pipelines: list[str]
    info: dict[str, Any]
    started_at: datetime
    last_seen_at: datetime
    current_job_id: int | None
    items_done: int
    stopped_at: datetime | None
    state: WorkerState


class WorkerRepository:
    def __init__(
        self, db: Database, *, lost_after_seconds: Mapping[str, float], min_interval_seconds: float = 1.0
    ) -> None:
        """``lost_after_seconds``: per kind, the silence after which a worker counts as lost (the
        length of that kind's lease)."""
        self.db = db
        self.lost_after_seconds = dict(lost_after_seconds)
        self.min_interval_seconds = min_interval_seconds
        self._beats: dict[_Identity, _Beat] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writes
    def seen(
        self,
        kind: str,
        name: str,
        *,
        host: str,
        pipelines: Sequence[str] | None = None,
        account_id: int | None = None,
        key_id: int | None = None,
        info: Mapping[str, Any] | None = None,
        job_id: int | None = None,
        items_done: int = 0,
        started: bool = False,
    ) -> bool:
        """Record that worker ``(kind, name)`` is alive; returns whether a row was written now.

        - ``kind``: ``local`` | ``celery`` | ``http`` | ``pull`` (``WorkerKind``).
        - ``name``: stable per worker: ``<host>/local-<slot>``, ``<celery hostname>/pool-<index>``,
          an HTTP worker's ``--name``, a pull worker's ``client_info.hostname`` (or its key's
          prefix). Cut to 200 characters; ``host`` to 255.
        - ``account_id``: None for the deployment's own workers (local, Celery), seen by every
          account; the key's account for ``http`` and ``pull`` workers (their rows are seen by that
          account only, and two accounts' workers of the same name are two rows). ``key_id``: the
          key they authenticated with.
        - ``pipelines``: the slugs it serves; ``info``: free-form facts (``client_info``, software,
          version, pid, device). Both replace the row's at each write; None keeps the row's (a new
          row starts with none): a pull worker names its pipelines when it lists jobs
          (``pipeline__slug__in``), not in ``/tasks/`` or ``/result/``.
        - ``job_id``: the job it works on now (None: idle). ``items_done``: items finished since the
          previous call (a delta, added to the row's total).
        - ``started``: the worker's first report since its process started: its ``started_at`` and
          ``items_done`` start again (a local slot's replacement process, a restarted HTTP worker).
          A row that was ``stopped`` starts again the same way without it.

        Cheap to call often: see the module's docstring for the throttle.
        """
        if kind not in WorkerKind.__members__.values():
            raise InvalidInput(f"Unknown worker kind {kind!r}.", kind=kind)
        identity: _Identity = (kind, name[:NAME_LENGTH], account_id)
        now = time.monotonic()
        with self._lock:
            beat = self._beats.setdefault(identity, _Beat())
            beat.pending_items += max(0, items_done)
            since = now - beat.written_at
            due = (
                started
                or beat.row_id is None
                or job_id != beat.job_id
                or (beat.pending_items and since >= self.min_interval_seconds)
                or since >= self.keepalive_seconds(kind)
            )
            if not due:
                return False
            pending, beat.pending_items = beat.pending_items, 0
            beat.job_id, beat.written_at = job_id, now
            row_id = beat.row_id
        values: dict[str, Any] = {"host": host[:HOST_LENGTH], "key_id": key_id, "current_job_id": job_id}
        if pipelines is not None:
            values["pipelines"] = list(pipelines)
        if info is not None:
            values["info"] = dict(info)
        try:
            written_id = self._write(identity, row_id, values, pending, started=started)
        except Exception:
            with self._lock:  # written next time instead
                beat.pending_items += pending
                beat.written_at = float("-inf")
            raise
        with self._lock:
            beat.row_id = written_id
        return True

    def flush(self) -> int:
        """Write the items reported but held back by the throttle (the sweeper calls this every
        period): a worker that went quiet right after its last report, such as a pull worker
        whose last ``/result/`` ended the job, still shows every item it finished. Returns the
        number of rows written."""
        now = time.monotonic()
        with self._lock:
            due = [
                (beat, beat.row_id, beat.pending_items)
                for beat in self._beats.values()
                if beat.pending_items
                and beat.row_id is not None
                and now - beat.written_at >= self.min_interval_seconds
            ]
            for beat, _, _ in due:
                beat.pending_items = 0
        if not due:
            return 0
        written = 0
        try:
            with self.db.write() as conn:
                for _, row_id, pending in due:
                    conn.execute(
                        update(workers)
                        .where(workers.c.id == row_id)
                        .values(items_done=workers.c.items_done + pending)
                    )
                    written += 1
        except Exception:
            with self._lock:  # counted next time instead
                for beat, _, pending in due:
                    beat.pending_items += pending
            raise
        return written

    def stopped(self, kind: str, name: str, *, account_id: int | None = None) -> None:
        """Worker ``(kind, name)`` exits cleanly: its row says ``stopped`` (with the items reported
        since the last write added) until it reports itself again."""
        identity: _Identity = (kind, name[:NAME_LENGTH], account_id)
        with self._lock:
            beat = self._beats.pop(identity, _Beat())
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(
                update(workers)
                .where(self._identity_clause(identity))
                .values(
                    stopped_at=now,
                    last_seen_at=now,
                    current_job_id=None,
                    items_done=workers.c.items_done + beat.pending_items,
                )
            )

    def _write(
        self, identity: _Identity, row_id: int | None, values: dict[str, Any], pending: int, *, started: bool
    ) -> int:
        now = utcnow()
        restarts = workers.c.stopped_at.isnot(None)
        if started:
            values |= {"started_at": now, "items_done": pending}
        else:
            values |= {
                "started_at": case((restarts, now), else_=workers.c.started_at),
                "items_done": case((restarts, pending), else_=workers.c.items_done + pending),
            }
        values |= {"last_seen_at": now, "stopped_at": None}
        where = workers.c.id == row_id if row_id is not None else self._identity_clause(identity)
        for _ in range(2):  # a second pass when another process inserted the same worker meanwhile
            with self.db.write() as conn:
                found = conn.execute(update(workers).where(where).values(**values).returning(workers.c.id))
                updated = found.scalar()
            if updated is not None:
                return int(updated)
            where = self._identity_clause(identity)
            try:
                return self._insert(identity, values, pending, now)
            except IntegrityError:
                continue
        raise RuntimeError(f"worker {identity} could not be recorded")

    def _insert(self, identity: _Identity, values: dict[str, Any], pending: int, now: datetime) -> int:
        kind, name, account_id = identity
        row = {"pipelines": [], "info": {}, **values, "started_at": now, "items_done": pending}
        with self.db.write() as conn:
            # A new worker is rare: a good moment to forget the long-gone ones.
            conn.execute(delete(workers).where(workers.c.last_seen_at < now - FORGET_AFTER))
            return int(
                conn.execute(
                    insert(workers)
                    .values(kind=kind, name=name, account_id=account_id, **row)
                    .returning(workers.c.id)
                ).scalar_one()
            )

    # ------------------------------------------------------------------ reads
    def list(
        self,
        account_id: int | None,
        *,
        kind: str | None = None,
        state: str | None = None,
        limit: int = 500,
        offset: int = 0,
        now: datetime | None = None,
    ) -> list[WorkerRow]:
        """Workers an account sees (the deployment's own plus its own; ``account_id`` None: every
        worker, for operators), most recently seen first, with their state at ``now``."""
        now = now or utcnow()
        query = select(workers).where(self._visible_to(account_id))
        if kind is not None:
            query = query.where(workers.c.kind == kind)
        if state is not None:
            query = query.where(self._in_state(WorkerState(state), now))
        query = query.order_by(workers.c.last_seen_at.desc(), workers.c.id.desc()).limit(limit).offset(offset)
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._row(r, now) for r in rows]

    def live_for(self, pipeline_slug: str, account_id: int, *, kinds: Collection[str] | None = None) -> bool:
        """Whether a worker that is neither stopped nor lost, and that this account's jobs reach
        (the deployment's or the account's own), serves ``pipeline_slug`` (``kinds``: only those,
        e.g. ``("pull",)`` for an async_api job)."""
        now = utcnow()
        query = select(workers.c.pipelines).where(
            self._visible_to(account_id), workers.c.stopped_at.is_(None), self._fresh(now)
        )
        if kinds is not None:
            query = query.where(workers.c.kind.in_(list(kinds)))
        with self.db.read() as conn:
            return any(pipeline_slug in (p or []) for p in conn.execute(query).scalars())

    def jobs_in_scope(self, job_ids: Collection[int], scope: Scope) -> set[int]:
        """Those of ``job_ids`` that ``scope`` may see (a deployment worker's current job is shown
        only to the job's own account)."""
        if not job_ids:
            return set()
        query = select(jobs.c.id).where(jobs.c.id.in_(list(job_ids)), jobs.c.account_id == scope.account_id)
        if scope.project_ids is not None:
            query = query.where(jobs.c.project_id.in_(list(scope.project_ids)))
        with self.db.read() as conn:
            return {int(i) for i in conn.execute(query).scalars()}

    # ------------------------------------------------------------------ helpers
    def keepalive_seconds(self, kind: str) -> float:
        """How often an unchanged worker's row is refreshed: well inside the silence that makes it lost."""
        third = lost_after(kind, self.lost_after_seconds) / 3
        return max(self.min_interval_seconds, min(MAX_KEEPALIVE_SECONDS, third))

    @staticmethod
    def _identity_clause(identity: _Identity) -> ColumnElement[bool]:
        kind, name, account_id = identity
        account = workers.c.account_id.is_(None) if account_id is None else workers.c.account_id == account_id
        return and_(workers.c.kind == kind, workers.c.name == name, account)

    @staticmethod
    def _visible_to(account_id: int | None) -> ColumnElement[bool]:
        if account_id is None:
            return true()
        return or_(workers.c.account_id.is_(None), workers.c.account_id == account_id)

    def _fresh(self, now: datetime) -> ColumnElement[bool]:
        """Seen within its kind's lease."""
        return or_(
            false(),
            *(
                and_(
                    workers.c.kind == kind.value,
                    workers.c.last_seen_at
                    >= now - timedelta(seconds=lost_after(kind, self.lost_after_seconds)),
                )
                for kind in WorkerKind
            ),
        )

    def _in_state(self, state: WorkerState, now: datetime) -> ColumnElement[bool]:
        if state is WorkerState.STOPPED:
            return workers.c.stopped_at.isnot(None)
        running = workers.c.stopped_at.is_(None)
        if state is WorkerState.LOST:
            return and_(running, ~self._fresh(now))
        job = (
            workers.c.current_job_id.isnot(None)
            if state is WorkerState.ACTIVE
            else workers.c.current_job_id.is_(None)
        )
        return and_(running, self._fresh(now), job)

    def _row(self, r: Any, now: datetime) -> WorkerRow:
        return WorkerRow(
            id=r["id"],
            kind=r["kind"],
            name=r["name"],
            host=r["host"],
            account_id=r["account_id"],
            key_id=r["key_id"],
            pipelines=list(r["pipelines"] or []),
            info=dict(r["info"] or {}),
            started_at=r["started_at"],
            last_seen_at=r["last_seen_at"],
            current_job_id=r["current_job_id"],
            items_done=int(r["items_done"]),
            stopped_at=r["stopped_at"],
            state=worker_state(
                stopped_at=r["stopped_at"],
                last_seen_at=r["last_seen_at"],
                current_job_id=r["current_job_id"],
                now=now,
                lost_after_seconds=lost_after(r["kind"], self.lost_after_seconds),
            ),
        )
