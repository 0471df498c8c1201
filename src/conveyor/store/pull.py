"""Pull repository: Antenna's pull protocol (async_api) served from item leases, without NATS.

A pull worker reserves tasks (``reserve``): up to N PENDING items of the job that no delivery
currently holds, each given a fresh reply subject ``<item id>.<random>`` and a lease. Its
answers (``apply_results``) are written in one transaction with the job's counters, and an item
leaves PENDING only while the reply subject it is answered under is still its current one: a
repeated post, a late answer after the item was offered again, or a forged subject changes
nothing. A delivery whose lease ran out is offered again; after ``max_deliveries`` the item
fails (``fail_exhausted``, run by ``reserve`` and by the sweeper), so the job always ends.

Lock order as everywhere (``store/lifecycle.py``): the job row first, then items. Reserving
takes the job row only when it must start the job or fail exhausted items; the item rows are
taken with SKIP LOCKED on PostgreSQL, so concurrent pullers never wait on each other's rows.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.clock import ms_between, utcnow
from conveyor.domain.pull import ASYNC_API, Applied, PullOutcome, Task, pull_slug
from conveyor.domain.status import RUNNABLE, ItemStatus, JobStatus
from conveyor.store import bulk, lifecycle
from conveyor.store.chunks import start_in
from conveyor.store.database import Database
from conveyor.store.tables import items, jobs, pipelines, pull_pipelines, pull_services

RUNNABLE_VALUES = [s.value for s in RUNNABLE]
#: Where an async_api job says that no pull worker serves it: a ``message`` param of this stage.
WAITING_STAGE = "results"
WAITING_PARAM = "message"


def waiting_message(slug: str, lost_after_seconds: float) -> str:
    return (
        f"Waiting for a pull worker: none serving {slug!r} in this account has been seen in the last "
        f"{lost_after_seconds:g} s. Start one (e.g. Antenna's ADC worker) for this project's pipeline; "
        "the job keeps its place until then."
    )


#: Jobs whose facts (account, project, dispatch mode) are kept in memory.
FACTS_CACHED = 10_000
#: The batch a puller may reserve at once (the ADC worker asks for 24; Antenna allows more).
MAX_BATCH = 500


def exhausted_error(max_deliveries: int) -> str:
    return f"no worker answered after {max_deliveries} deliveries"


def slug_clause(slugs: Sequence[str]) -> ColumnElement[bool]:
    """Pipeline rows named by any of ``slugs``: an installed slug, or a registered pull slug in
    any project (``pull:<project>/<slug>``; the caller's scope narrows the jobs)."""
    patterns = []
    for slug in slugs:
        escaped = slug.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        patterns.append(pipelines.c.slug.like(f"pull:%/{escaped}", escape="\\"))
    return or_(pipelines.c.slug.in_(list(slugs)), *patterns)


def pipeline_ids(conn: Connection, slugs: Sequence[str]) -> list[int]:
    return list(conn.execute(select(pipelines.c.id).where(slug_clause(slugs))).scalars())


@dataclass(frozen=True)
class JobFacts:
    account_id: int
    project_id: int
    dispatch_mode: str


class PullRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = bulk.Dialect(db.dialect)
        self._facts: dict[int, JobFacts] = {}

    # ------------------------------------------------------------ registration
    def register(
        self,
        account_id: int,
        project_id: int,
        service_name: str,
        described: Sequence[dict[str, Any]],
        registered_by: str | None,
    ) -> tuple[list[str], list[str], int]:
        """Create or update the service and its pipelines in the project (idempotent).
        Returns (slugs created, slugs updated, service id)."""
        try:
            return self._register(account_id, project_id, service_name, described, registered_by)
        except IntegrityError:  # a concurrent first registration won the insert: update it instead
            return self._register(account_id, project_id, service_name, described, registered_by)

    def _register(
        self,
        account_id: int,
        project_id: int,
        service_name: str,
        described: Sequence[dict[str, Any]],
        registered_by: str | None,
    ) -> tuple[list[str], list[str], int]:
        now = utcnow()
        created: list[str] = []
        updated: list[str] = []
        with self.db.write() as conn:
            service_id = conn.execute(
                select(pull_services.c.id).where(
                    pull_services.c.project_id == project_id, pull_services.c.name == service_name
                )
            ).scalar()
            if service_id is None:
                service_id = conn.execute(
                    insert(pull_services)
                    .values(
                        account_id=account_id,
                        project_id=project_id,
                        name=service_name,
                        registered_by=registered_by,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(pull_services.c.id)
                ).scalar_one()
            else:
                conn.execute(
                    update(pull_services)
                    .where(pull_services.c.id == service_id)
                    .values(updated_at=now, registered_by=registered_by)
                )
            known = {
                row.slug: row.id
                for row in conn.execute(
                    select(pull_pipelines.c.slug, pull_pipelines.c.id).where(
                        pull_pipelines.c.project_id == project_id
                    )
                )
            }
            for entry in described:
                pipeline_id = self._pipeline_row(conn, project_id, entry, now)
                values = {
                    "service_id": service_id,
                    "pipeline_id": pipeline_id,
                    "info": entry,
                    "updated_at": now,
                }
                if entry["slug"] in known:
                    conn.execute(
                        update(pull_pipelines)
                        .where(pull_pipelines.c.id == known[entry["slug"]])
                        .values(**values)
                    )
                    updated.append(entry["slug"])
                else:
                    conn.execute(
                        insert(pull_pipelines).values(
                            project_id=project_id, slug=entry["slug"], created_at=now, **values
                        )
                    )
                    known[entry["slug"]] = -1
                    created.append(entry["slug"])
        return created, updated, int(service_id)

    @staticmethod
    def _pipeline_row(conn: Connection, project_id: int, entry: dict[str, Any], now: datetime) -> int:
        """The pipeline row of this (slug, version); made on first registration. Rows are history."""
        slug = pull_slug(project_id, entry["slug"])
        found = conn.execute(
            select(pipelines.c.id).where(pipelines.c.slug == slug, pipelines.c.version == entry["version"])
        ).scalar()
        if found is not None:
            return int(found)
        return int(
            conn.execute(
                insert(pipelines)
                .values(
                    slug=slug,
                    version=entry["version"],
                    version_name=entry.get("version_name", ""),
                    name=entry["name"],
                    description=entry["description"],
                    input_kinds=["base64"],
                    stages=entry["stages"],
                    image_classification_model=True,
                    supports_explain=False,
                    batch_size=24,
                    created_at=now,
                    updated_at=now,
                )
                .returning(pipelines.c.id)
            ).scalar_one()
        )

    def pipeline(self, project_id: int, slug: str) -> RowMapping | None:
        """The project's registered pull pipeline ``slug`` with its pipeline row, or None."""
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(
                        pull_pipelines.c.slug,
                        pull_pipelines.c.info,
                        pipelines.c.id.label("pipeline_id"),
                        pipelines.c.slug.label("pipeline_slug"),
                        pipelines.c.version,
                    )
                    .join(pipelines, pipelines.c.id == pull_pipelines.c.pipeline_id)
                    .where(pull_pipelines.c.project_id == project_id, pull_pipelines.c.slug == slug)
                )
                .mappings()
                .first()
            )

    def job_facts(self, job_id: int) -> JobFacts | None:
        """The job's account, project and dispatch mode: never changed once the job exists, so
        kept in memory after the first read (a deleted job's entry only lets a caller reach
        verbs that find nothing to lease or write). One dict lookup per task call."""
        found = self._facts.get(job_id)
        if found is not None:
            return found
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs.c.account_id, jobs.c.project_id, jobs.c.dispatch_mode).where(jobs.c.id == job_id)
            ).first()
        if row is None:
            return None
        facts = JobFacts(row.account_id, row.project_id, row.dispatch_mode)
        if len(self._facts) >= FACTS_CACHED:
            self._facts.pop(next(iter(self._facts)))
        self._facts[job_id] = facts
        return facts

    def registered(self, account_id: int, project_ids: frozenset[int] | None) -> list[tuple[int, str]]:
        """(project id, slug) of the pull pipelines registered in the account's projects (those
        of ``project_ids`` when given)."""
        query = (
            select(pull_pipelines.c.project_id, pull_pipelines.c.slug)
            .join(pull_services, pull_services.c.id == pull_pipelines.c.service_id)
            .where(pull_services.c.account_id == account_id)
        )
        if project_ids is not None:
            query = query.where(pull_pipelines.c.project_id.in_(sorted(project_ids)))
        with self.db.read() as conn:
            return [(row.project_id, row.slug) for row in conn.execute(query)]

    # ------------------------------------------------------------ tasks
    def forget(self, job_id: int) -> None:
        self._facts.pop(job_id, None)

    def reserve(
        self, facts: JobFacts, job_id: int, batch_size: int, *, lease_seconds: float, max_deliveries: int
    ) -> list[Task] | None:
        """Lease up to ``batch_size`` items of a runnable async_api job (none if it is not runnable).

        Starts the job (PENDING -> STARTED) like a first chunk claim, and first fails the items
        whose last delivery ran out after ``max_deliveries`` deliveries.
        """
        now = utcnow()
        with self.db.write() as conn:
            status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id, *_owned(facts))).scalar()
            if status is None:
                return None  # no such job under these facts any more: the caller checks again
            if status not in RUNNABLE_VALUES:
                return []
            if status == JobStatus.PENDING.value:
                start_in(conn, job_id, now)
            if _fail_exhausted(conn, job_id, now, max_deliveries) is not None:
                return []  # those were the job's last items: it ended
            free = or_(items.c.lease_expires_at.is_(None), items.c.lease_expires_at < now)
            rows = conn.execute(
                select(items.c.id, items.c.ref)
                .where(
                    items.c.job_id == job_id,
                    items.c.status == ItemStatus.PENDING.value,
                    free,
                    func.coalesce(items.c.deliveries, 0) < max_deliveries,
                )
                .order_by(items.c.seq)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                lifecycle.finish_if_complete(conn, job_id)  # e.g. every input failed at submission
                return []
            tasks = [Task(row.id, row.ref, f"{row.id}.{secrets.token_urlsafe(12)}") for row in rows]
            self._lease(conn, tasks, now, now + timedelta(seconds=lease_seconds))
        return tasks

    def _lease(self, conn: Connection, tasks: Sequence[Task], now: datetime, until: datetime) -> None:
        d = self.dialect
        if d.sqlite:
            sql = (
                "UPDATE items SET reply_subject=?, lease_expires_at=?, started_at=?, "
                "deliveries=COALESCE(deliveries, 0) + 1 WHERE id=?"
            )
            conn.exec_driver_sql(
                sql, [(t.reply_subject, d.time(until), d.time(now), t.item_id) for t in tasks]
            )
            return
        conn.exec_driver_sql(
            "UPDATE items AS i SET reply_subject = v.rs, lease_expires_at = %s, started_at = %s, "
            "deliveries = COALESCE(i.deliveries, 0) + 1 "
            "FROM jsonb_to_recordset(CAST(%s AS JSONB)) AS v(id bigint, rs text) WHERE i.id = v.id",
            (until, now, json.dumps([{"id": t.item_id, "rs": t.reply_subject} for t in tasks])),
        )

    # ------------------------------------------------------------ results
    def apply_results(self, facts: JobFacts, job_id: int, outcomes: Sequence[PullOutcome]) -> Applied | None:
        """Write the answers whose reply subject is still current, with the job's counters, in one
        transaction. A job that is no longer runnable (canceled, ended) takes nothing."""
        now = utcnow()
        unique: dict[str, PullOutcome] = {}
        for outcome in outcomes:
            unique.setdefault(outcome.reply_subject, outcome)
        chosen = list(unique.values())
        params = self._result_params(chosen, now)  # before the write transaction
        with self.db.write() as conn:
            found = conn.execute(
                select(jobs.c.status).where(jobs.c.id == job_id, *_owned(facts)).with_for_update()
            ).scalar()
            if found is None:
                return None  # no such job under these facts any more: the caller checks again
            status = JobStatus(found)
            if status not in RUNNABLE or not chosen:
                return Applied(frozenset(), status.value)
            written = self._write_items(conn, job_id, chosen, params, now)
            if not written:
                return Applied(frozenset(), status.value)
            ok = sum(1 for o in chosen if o.item_id in written and o.ok)
            failed = len(written) - ok
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    completed=jobs.c.completed + ok,
                    failed=jobs.c.failed + failed,
                    pending=jobs.c.pending - len(written),
                    updated_at=now,
                )
            )
            if failed:
                errors = [o.error for o in chosen if o.item_id in written and not o.ok][:3]
                shown = "; ".join(f"{e}" for e in errors)
                more = f" (and {failed - len(errors)} more)" if failed > len(errors) else ""
                lifecycle.add_log(conn, job_id, "WARNING", f"{failed} item(s) failed: {shown}{more}", now)
            finished = lifecycle.finish_if_complete(conn, job_id)
            final = finished.target.value if finished else status.value
        return Applied(frozenset(written), final)

    def _result_params(self, chosen: Sequence[PullOutcome], now: datetime) -> Any:
        if self.dialect.sqlite:
            return None  # built per matched row inside the transaction (it needs started_at)
        records = []
        for o in chosen:
            record: dict[str, Any] = {"id": o.item_id, "rs": o.reply_subject, "status": _status(o)}
            if o.result is not None:
                record["result"] = o.result
            if o.error is not None:
                record["error"] = o.error
            records.append(record)
        return json.dumps(records)

    def _write_items(
        self, conn: Connection, job_id: int, chosen: Sequence[PullOutcome], params: Any, now: datetime
    ) -> set[int]:
        d = self.dialect
        if not d.sqlite:
            rows = conn.exec_driver_sql(
                "UPDATE items AS i SET status = v.status, result = v.result, error = v.error, "
                "finished_at = %s, "
                "duration_ms = CAST(EXTRACT(EPOCH FROM (CAST(%s AS timestamptz) - i.started_at)) * 1000 "
                "AS integer), "
                "attempts = i.attempts + 1, reply_subject = NULL, lease_expires_at = NULL "
                "FROM jsonb_to_recordset(CAST(%s AS JSONB)) AS v(id bigint, rs text, status text, "
                "result jsonb, error text) "
                "WHERE i.id = v.id AND i.job_id = %s AND i.status = 'PENDING' AND i.reply_subject = v.rs "
                "RETURNING i.id",
                (now, now, params, job_id),
            ).all()
            return {row[0] for row in rows}
        # SQLite serialises writers: what this transaction reads stays true until it commits.
        by_id = {o.item_id: o for o in chosen}
        current = conn.execute(
            select(items.c.id, items.c.reply_subject, items.c.started_at).where(
                items.c.job_id == job_id,
                items.c.status == ItemStatus.PENDING.value,
                items.c.id.in_(list(by_id)),
            )
        ).all()
        matched = [row for row in current if row.reply_subject == by_id[row.id].reply_subject]
        if not matched:
            return set()
        stamp = d.time(now)
        conn.exec_driver_sql(
            "UPDATE items SET status=?, result=?, error=?, finished_at=?, duration_ms=?, "
            "attempts=attempts + 1, reply_subject=NULL, lease_expires_at=NULL "
            "WHERE id=? AND status='PENDING'",
            [
                (
                    _status(by_id[row.id]),
                    None if by_id[row.id].result is None else json.dumps(by_id[row.id].result),
                    by_id[row.id].error,
                    stamp,
                    ms_between(row.started_at, now),
                    row.id,
                )
                for row in matched
            ],
        )
        return {row.id for row in matched}

    # ------------------------------------------------------------ jobs
    def next_job(self, job_clauses: Sequence[ColumnElement[bool]], slugs: Sequence[str]) -> RowMapping | None:
        """The oldest runnable async_api job (within ``job_clauses``, the caller's scope) of one of
        ``slugs`` that still has an item no delivery holds."""
        now = utcnow()
        with self.db.read() as conn:
            ids = pipeline_ids(conn, slugs)
            if not ids:
                return None
            free_item = (
                select(items.c.id)
                .where(
                    items.c.job_id == jobs.c.id,
                    items.c.status == ItemStatus.PENDING.value,
                    or_(items.c.lease_expires_at.is_(None), items.c.lease_expires_at < now),
                )
                .limit(1)
                .exists()
            )
            return (
                conn.execute(
                    select(jobs.c.id, pipelines.c.slug.label("pipeline_slug"))
                    .join(pipelines, pipelines.c.id == jobs.c.pipeline_id)
                    .where(
                        *job_clauses,
                        jobs.c.dispatch_mode == ASYNC_API,
                        jobs.c.status.in_(RUNNABLE_VALUES),
                        jobs.c.pipeline_id.in_(ids),
                        free_item,
                    )
                    .order_by(jobs.c.id)
                    .limit(1)
                )
                .mappings()
                .first()
            )

    def running_jobs(self) -> list[RowMapping]:
        """The runnable async_api jobs (id, account_id, pipeline_slug, stage_params): the sweeper
        says in each whether a pull worker serves it (``note_waiting``)."""
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(
                        jobs.c.id,
                        jobs.c.account_id,
                        pipelines.c.slug.label("pipeline_slug"),
                        jobs.c.stage_params,
                    )
                    .select_from(jobs.join(pipelines, pipelines.c.id == jobs.c.pipeline_id))
                    .where(jobs.c.status.in_(RUNNABLE_VALUES), jobs.c.dispatch_mode == ASYNC_API)
                ).mappings()
            )

    def note_waiting(self, job_id: int, message: str | None) -> bool:
        """Show (or, with None, clear) ``message`` in the job's results stage: why nothing moves
        (no live pull worker for its pipeline). Written only when it changes; True if it did."""
        with self.db.write() as conn:
            row = conn.execute(
                select(jobs.c.stage_params).where(jobs.c.id == job_id, jobs.c.status.in_(RUNNABLE_VALUES))
            ).first()
            if row is None:
                return False
            params = dict(row.stage_params or {})
            kept = [p for p in params.get(WAITING_STAGE, []) if p.get("name") != WAITING_PARAM]
            shown = kept + ([{"name": WAITING_PARAM, "value": message}] if message else [])
            if shown == list(params.get(WAITING_STAGE, [])):
                return False
            params[WAITING_STAGE] = shown
            conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(stage_params=params, updated_at=utcnow())
            )
            return True

    def fail_exhausted_everywhere(self, max_deliveries: int) -> list[int]:
        """The sweeper's step: fail the exhausted items of every runnable async_api job, so a job
        whose last items were never answered ends even when no worker asks again. Returns the
        ids of the jobs that ended. Finding them is one read; a write only where there are some."""
        now = utcnow()
        with self.db.read() as conn:
            job_ids = list(
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.status.in_(RUNNABLE_VALUES),
                        jobs.c.dispatch_mode == ASYNC_API,
                        select(items.c.id)
                        .where(_exhausted(jobs.c.id, now, max_deliveries))
                        .limit(1)
                        .exists(),
                    )
                ).scalars()
            )
        ended: list[int] = []
        for job_id in job_ids:
            with self.db.write() as conn:
                if _fail_exhausted(conn, job_id, now, max_deliveries) is not None:
                    ended.append(job_id)
        return ended


def _owned(facts: JobFacts) -> list[ColumnElement[bool]]:
    """The job still is the one the cached facts describe (an id of a deleted job may be reused)."""
    return [jobs.c.account_id == facts.account_id, jobs.c.project_id == facts.project_id]


def _status(outcome: PullOutcome) -> str:
    return ItemStatus.SUCCESS.value if outcome.ok else ItemStatus.FAILURE.value


def _exhausted(job_id: int | ColumnElement[Any], now: datetime, max_deliveries: int) -> ColumnElement[bool]:
    return and_(
        items.c.job_id == job_id,
        items.c.lease_expires_at < now,
        items.c.status == ItemStatus.PENDING.value,
        items.c.deliveries >= max_deliveries,
    )


def _fail_exhausted(
    conn: Connection, job_id: int, now: datetime, max_deliveries: int
) -> lifecycle.Transitioned | None:
    """Fail the items whose last delivery ran out after ``max_deliveries``; finish the job if that
    was the end of it. The job row is locked (lock order) only when there is such an item."""
    if (
        conn.execute(select(items.c.id).where(_exhausted(job_id, now, max_deliveries)).limit(1)).first()
        is None
    ):
        return None
    status = lifecycle.lock_job_status(conn, job_id)
    if status not in RUNNABLE:
        return None
    error = exhausted_error(max_deliveries)
    failed = conn.execute(
        update(items)
        .where(_exhausted(job_id, now, max_deliveries))
        .values(
            status=ItemStatus.FAILURE.value,
            error=error,
            finished_at=now,
            reply_subject=None,
            lease_expires_at=None,
            attempts=items.c.attempts + 1,
        )
    ).rowcount
    if not failed:
        return None
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(failed=jobs.c.failed + failed, pending=jobs.c.pending - failed, updated_at=now)
    )
    lifecycle.add_log(conn, job_id, "WARNING", f"{failed} item(s) failed: {error}", now)
    return lifecycle.finish_if_complete(conn, job_id)
