"""History query latency at scale: filtered first pages, deep keyset pages, and offset paging.

1. ``conveyor db upgrade`` + ``conveyor keys create`` on a fresh database (SQLite in a temp data
   directory, or ``--database-url`` for PostgreSQL: a temporary database is created and dropped).
2. K jobs (``--jobs``, default 100000) are bulk inserted into ``jobs`` with SQLAlchemy Core:
   statuses, pipelines, names, job types and two projects spread like a real history, created_at
   over ~6 months increasing with the id. Items, logs and events are not seeded (history never
   reads them). The default account/project/pipelines/key rows are the ones Conveyor created.
3. A server (no workers) is started on it and measured over HTTP (one keep-alive httpx client):
   - first page of every filter and ordering: p50/p99 over ``--repeat`` requests;
   - deep keyset pages: follow ``next`` 50 times, each page timed;
   - the same deep position (``--deep``, default 90% of the matching rows) by keyset cursor and by
     ``offset``, side by side (and checked to return the same rows).
4. The same first pages at the store level (``HistoryRepository.page`` in-process, no HTTP),
   split into the COUNT query and the row fetch, with the database's query plans.

    .venv/bin/python bench/history.py [--jobs 100000] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common import (
    TERMINAL_STATUSES,
    bench_env,
    emit,
    log,
    machine_info,
    postgres_database,
    rnd,
    run_cli,
    running_server,
    summarize,
    temp_dir,
)
from conveyor.testing import create_key
from load import generator_command

SEED_BATCH = 5000
LOAD_MAX_SECONDS = 3600  # --with-load: the generator's own bound (stopped when the run ends)
TARGET_P99_MS = 50.0
SECOND_PROJECT = "research"
# Share of each status in a long-lived history: mostly finished jobs, a few in flight.
STATUS_WEIGHTS = {
    "SUCCESS": 78.0,
    "FAILURE": 8.0,
    "REVOKED": 5.0,
    "TIMEDOUT": 2.0,
    "CREATED": 2.0,
    "PENDING": 2.5,
    "STARTED": 2.0,
    "RETRY": 0.3,
    "CANCELING": 0.2,
}
NAME_TEMPLATES = [
    ("nightly-{pipeline}-{day}", 30),
    ("moth-survey-{site}-{n}", 20),
    ("digits-eval-{n}", 15),
    ("user-upload-{n}", 25),
    ("backfill-{month}-part-{part}", 9.9),
    ("calibration-run-{n}", 0.1),
]
SITES = ["vermont", "quebec", "panama", "borneo", "kenya", "denmark", "arizona", "oregon"]


# --------------------------------------------------------------------------- seeding
def job_rows(
    count: int,
    *,
    account_id: int,
    project_ids: list[int],
    pipeline_ids: dict[str, int],
    key_prefix: str,
    now: datetime,
    seed: int,
) -> Iterator[list[dict[str, Any]]]:
    """Batches of job rows, oldest first (ids grow with created_at, as in a real history)."""
    rng = random.Random(seed)
    span = timedelta(days=180).total_seconds()
    start = now - timedelta(days=180)
    statuses, status_w = zip(*STATUS_WEIGHTS.items(), strict=True)
    templates, template_w = zip(*NAME_TEMPLATES, strict=True)
    slugs = list(pipeline_ids)
    batch: list[dict[str, Any]] = []
    for index in range(count):
        # Spread evenly with jitter, so created_at increases with the id (ties are possible).
        created = start + timedelta(seconds=span * (index + rng.random()) / count)
        age = (now - created).total_seconds()
        status = rng.choices(statuses, status_w)[0]
        if age > 86400 and status not in TERMINAL_STATUSES:  # old jobs are finished
            status = "SUCCESS" if rng.random() < 0.9 else "FAILURE"
        slug = slugs[0] if rng.random() < 0.6 else slugs[-1]
        total = rng.choice((1, 3, 10, 40, 100, 899, 1000, 5000))
        name = rng.choices(templates, template_w)[0].format(
            pipeline=slug,
            day=created.strftime("%Y%m%d"),
            site=rng.choice(SITES),
            n=rng.randrange(100_000),
            month=created.strftime("%Y-%m"),
            part=rng.randrange(50),
        )
        submitted = None if status == "CREATED" else created + timedelta(milliseconds=rng.randrange(1, 50))
        started = finished = None
        queue_ms = elapsed_ms = None
        completed = failed = canceled = 0
        pending = total
        if status not in ("CREATED", "PENDING") and submitted is not None:
            queue_ms = rng.randrange(2, 3000)
            started = submitted + timedelta(milliseconds=queue_ms)
        if status in TERMINAL_STATUSES and started is not None:
            elapsed_ms = int(total * rng.uniform(0.05, 40)) + rng.randrange(0, 500)
            finished = started + timedelta(milliseconds=elapsed_ms)
            if status == "SUCCESS":
                failed = rng.randrange(0, max(1, total // 20))
            elif status == "FAILURE":
                failed = max(1, total // 2 + 1)
            elif status in ("REVOKED", "TIMEDOUT"):
                canceled = rng.randrange(0, total + 1)
                failed = rng.randrange(0, max(1, (total - canceled) // 10))
            failed = min(failed, total - canceled)
            completed = total - failed - canceled
            pending = 0
        elif status in ("STARTED", "RETRY", "CANCELING"):
            completed = rng.randrange(0, total)
            pending = total - completed
        updated = finished or started or submitted or created
        batch.append(
            {
                "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "name": name,
                "account_id": account_id,
                "project_id": project_ids[0] if rng.random() < 0.7 else project_ids[1],
                "pipeline_id": pipeline_ids[slug],
                "job_type": "ml" if rng.random() < 0.97 else "data_export",
                "status": status,
                "dispatch_mode": "internal",
                "delay": 0.0,
                "limit": None,
                "shuffle": False,
                "timeout_ms": rng.choice((None, None, None, 3_600_000)),
                "explain": False,
                "max_failed_ratio": 0.5,
                "config": {"batch_size": 32} if slug == "digits" else {"item_seconds": 0},
                "input_summary": {"kinds": {"text": total}, "count": total},
                "total": total,
                "pending": pending,
                "completed": completed,
                "failed": failed,
                "canceled": canceled,
                "input_byte_amount": total * rng.randrange(10, 4000),
                "submitted_by": key_prefix,
                "created_at": created,
                "updated_at": updated,
                "submitted_at": submitted,
                "started_at": started,
                "finished_at": finished,
                "deadline_at": None,
                "cancel_requested_at": None,
                "queue_time_ms": queue_ms,
                "elapsed_time_ms": elapsed_ms,
                "delay_progress": 0.0,
                "stage_params": {},
                "result": None,
            }
        )
        if len(batch) >= SEED_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def seeded_count(store: Any) -> int:
    from sqlalchemy import func, select

    from conveyor.store.tables import jobs

    with store.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def describe_seed(store: Any, count: int) -> dict[str, Any]:
    """What ``seed`` returns, read back from a database seeded by an earlier run (``--reuse-seed``)."""
    from sqlalchemy import func, select

    from conveyor.store.tables import jobs, pipelines

    account_id, default_project = store.auth.ensure_defaults()
    second_project = store.auth.ensure_project(account_id, SECOND_PROJECT, "Research")
    with store.db.read() as conn:
        pipeline_ids = {
            r.slug: r.id
            for r in conn.execute(select(pipelines.c.slug, pipelines.c.id).order_by(pipelines.c.id))
        }
        newest = conn.execute(select(func.max(jobs.c.created_at))).scalar_one()
        key_prefix = conn.execute(select(jobs.c.submitted_by).limit(1)).scalar_one()
        by_status = dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
    return {
        "jobs": count,
        "reused": True,
        "by_status": by_status,
        "account_id": account_id,
        "project_ids": {"default": default_project, SECOND_PROJECT: second_project},
        "pipeline_ids": pipeline_ids,
        "key_prefix": key_prefix,
        "now": newest.isoformat(timespec="seconds"),
    }


def seed_or_reuse(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Seed ``args.jobs`` jobs, unless ``--reuse-seed`` and the database already holds exactly that
    many (then describe them); a partial or different seed is deleted and done again."""
    from sqlalchemy import delete

    from conveyor.store.tables import jobs

    analyze = args.analyze or not store.db.is_sqlite
    if args.reuse_seed:
        found = seeded_count(store)
        if found == args.jobs:
            log(f"reusing the {found} jobs seeded earlier")
            described = describe_seed(store, found)
            settle(store)  # new indexes (a migration since the seed) need statistics
            return described
        if found:
            log(f"{found} jobs found, {args.jobs} wanted: seeding again")
            with store.db.write() as conn:
                conn.execute(delete(jobs))
    log(f"seeding {args.jobs} jobs into {store.db.dialect}")
    seeded = seed(store, args.jobs, args.seed, analyze=analyze)
    log(f"seeded in {seeded['seconds']} s ({seeded['rows_per_second']} rows/s)")
    return seeded


def settle(store: Any) -> None:
    """Statistics for the planner, and on PostgreSQL what autovacuum does to a table at rest: a
    ``VACUUM`` sets the visibility map, so index-only scans (history's walks) need not visit the
    table. These machines run PostgreSQL with autovacuum off; a default server has it on."""
    from sqlalchemy import text

    if store.db.is_sqlite:
        with store.db.write() as conn:
            conn.execute(text("ANALYZE"))
        return
    with store.db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE) jobs")


def seed(store: Any, count: int, seed_value: int, analyze: bool) -> dict[str, Any]:
    from sqlalchemy import func, insert, select

    from conveyor.store.tables import api_keys, jobs, pipelines

    account_id, default_project = store.auth.ensure_defaults()
    second_project = store.auth.ensure_project(account_id, SECOND_PROJECT, "Research")
    with store.db.read() as conn:
        pipeline_ids = {
            r.slug: r.id
            for r in conn.execute(select(pipelines.c.slug, pipelines.c.id).order_by(pipelines.c.id))
        }
        key_prefix = conn.execute(select(api_keys.c.prefix).order_by(api_keys.c.id)).scalars().first()
    ordered = {slug: pipeline_ids[slug] for slug in ("test-delay", "digits") if slug in pipeline_ids}
    now = datetime.now(UTC)
    started = time.perf_counter()
    inserted = 0
    for batch in job_rows(
        count,
        account_id=account_id,
        project_ids=[default_project, second_project],
        pipeline_ids=ordered or pipeline_ids,
        key_prefix=key_prefix or "",
        now=now,
        seed=seed_value,
    ):
        with store.db.write() as conn:
            conn.execute(insert(jobs), batch)
        inserted += len(batch)
        if inserted % 50_000 == 0:
            log(f"seeded {inserted}/{count} jobs")
    seconds = time.perf_counter() - started
    analyze_seconds = None
    if analyze:
        t = time.perf_counter()
        settle(store)
        analyze_seconds = time.perf_counter() - t
    with store.db.read() as conn:
        by_status = dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
    return {
        "jobs": inserted,
        "seconds": rnd(seconds),
        "rows_per_second": round(inserted / seconds),
        "analyze": analyze,
        "analyze_seconds": rnd(analyze_seconds),
        "by_status": by_status,
        "account_id": account_id,
        "project_ids": {"default": default_project, SECOND_PROJECT: second_project},
        "pipeline_ids": pipeline_ids,
        "key_prefix": key_prefix,
        "now": now.isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- cases
def first_page_cases(seeded: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every filter alone, a few together, and every ordering (both directions)."""
    now = datetime.fromisoformat(seeded["now"])
    research = seeded["project_ids"][SECOND_PROJECT]
    month = {
        "created_after": (now - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S"),
        "created_before": (now - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    week_updated = {
        "updated_after": (now - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%S"),
        "updated_before": (now - timedelta(days=33)).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    cases: list[tuple[str, dict[str, Any]]] = [
        ("no filter", {}),
        ("status=SUCCESS", {"status": "SUCCESS"}),
        ("status=FAILURE", {"status": "FAILURE"}),
        ("status=pending (group)", {"status": "pending"}),
        ("status=terminated (group)", {"status": "terminated"}),
        ("pipeline=digits", {"pipeline": "digits"}),
        ("project=research", {"project": research}),
        ("job_type_key=data_export", {"job_type_key": "data_export"}),
        ("submitted_by=<seed key> (all)", {"submitted_by": seeded.get("key_prefix") or ""}),
        ("submitted_by=<unused key> (none)", {"submitted_by": "nokey000"}),
        ("search=survey (common)", {"search": "survey"}),
        ("search=calibration (rare)", {"search": "calibration"}),
        ("search=calibration-run-4 (rarer)", {"search": "calibration-run-4"}),
        ("search=no-such-name (none)", {"search": "no-such-name"}),
        ("search=qz (2 chars, none)", {"search": "qz"}),
        ("created range (one month)", month),
        ("updated range (one week)", week_updated),
        ("status+pipeline+project", {"status": "SUCCESS", "pipeline": "digits", "project": research}),
        ("status=FAILURE ordering=-duration", {"status": "FAILURE", "ordering": "-duration"}),
        ("pipeline=digits ordering=name", {"pipeline": "digits", "ordering": "name"}),
        ("search=survey ordering=name", {"search": "survey", "ordering": "name"}),
        ("search=calibration ordering=-duration", {"search": "calibration", "ordering": "-duration"}),
    ]
    for key in ORDERING_KEYS:
        for ordering in (key, f"-{key}"):
            if ordering != "-created_at":  # the default: "no filter"
                cases.append((f"ordering={ordering}", {"ordering": ordering}))
    return cases


ORDERING_KEYS = ["created_at", "updated_at", "status", "duration", "name", "id"]


def modzy_cases(seeded: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Modzy's ``GET /api/jobs/history``: every sort-by both ways, dates, model, status, user, key."""
    now = datetime.fromisoformat(seeded["now"])
    dates = {
        "startDate": (now - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S"),
        "endDate": (now - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    cases: list[tuple[str, dict[str, Any]]] = [
        ("all", {}),
        ("status=terminated", {"status": "terminated"}),
        ("status=pending", {"status": "pending"}),
        ("status=FAILED", {"status": "FAILED"}),
        ("model=digits", {"model": "digits"}),
        ("startDate+endDate (one month)", dates),
        ("user=bench", {"user": "bench"}),
        ("accessKey=<seed key>", {"accessKey": seeded.get("key_prefix") or ""}),
        ("accessKey=<unused key> (none)", {"accessKey": "nokey000"}),
        ("model+status+dates", {"model": "digits", "status": "COMPLETED", **dates}),
    ]
    for sort_by in ("createdAt", "submittedAt", "updatedAt", "status", "elapsedTime", "name"):
        for direction in ("asc", "desc"):
            cases.append((f"sort-by={sort_by} {direction}", {"sort-by": sort_by, "direction": direction}))
    return cases


def history_query(params: dict[str, Any], limit: int, **kw: Any) -> Any:
    """The HistoryQuery the route builds from these query parameters."""
    from conveyor.domain.status import resolve_status_filter
    from conveyor.store.history import HistoryQuery

    def when(key: str) -> datetime | None:
        value = params.get(key)
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None

    return HistoryQuery(
        statuses=resolve_status_filter(params["status"]) if params.get("status") else None,
        pipeline=params.get("pipeline"),
        project_id=params.get("project"),
        job_type=params.get("job_type_key"),
        created_after=when("created_after"),
        created_before=when("created_before"),
        updated_after=when("updated_after"),
        updated_before=when("updated_before"),
        search=params.get("search"),
        submitted_by=params.get("submitted_by"),
        ordering=params.get("ordering", "-created_at"),
        limit=limit,
        **kw,
    )


# --------------------------------------------------------------------------- HTTP
def timed_get(client: Any, url: str, params: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(url, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params} -> {response.status_code}: {response.text[:300]}")
    return elapsed, response.json()


def http_first_pages(client: Any, cases: list[tuple[str, dict[str, Any]]], limit: int, repeat: int) -> Any:
    out = {}
    for label, params in cases:
        query = {**params, "limit": limit}
        for _ in range(2):
            timed_get(client, "/api/v2/jobs/", query)
        samples = []
        for _ in range(repeat):
            ms, body = timed_get(client, "/api/v2/jobs/", query)
            samples.append(ms)
        out[label] = {"count": body["count"], "rows": len(body["results"]), **summarize(samples, (50, 99))}
    return out


def http_keyset_chain(client: Any, params: dict[str, Any], limit: int, pages: int) -> dict[str, Any]:
    """First page, then follow ``next`` ``pages`` times; every request timed."""
    ms, body = timed_get(client, "/api/v2/jobs/", {**params, "limit": limit})
    samples, seen = [ms], len(body["results"])
    for _ in range(pages):
        if not body["next"]:
            break
        ms, body = timed_get(client, body["next"])
        samples.append(ms)
        seen += len(body["results"])
    return {
        "pages": len(samples),
        "rows_seen": seen,
        "first_page_ms": round(samples[0], 2),
        "last_page_ms": round(samples[-1], 2),
        **summarize(samples[1:], (50, 99)),
    }


def deep_cursor(store: Any, scope: Any, params: dict[str, Any], position: int) -> str | None:
    """The keyset cursor a client holds after reading ``position`` rows of this listing."""
    from conveyor.store.history import ORDERINGS, _parse_ordering, _sort_value, encode_cursor
    from conveyor.store.jobs import JobRepository
    from conveyor.store.tables import jobs

    q = history_query(params, 1)
    key, descending = _parse_ordering(q.ordering)
    where = store.history.filters(scope, q)
    column = ORDERINGS[key]
    order = [column.desc(), jobs.c.id.desc()] if descending else [column.asc(), jobs.c.id.asc()]
    with store.db.read() as conn:
        rows = JobRepository.fetch_rows(conn, where, order, 1, offset=position - 1)
    if not rows:
        return None
    return encode_cursor(key, _sort_value(rows[0], key), rows[0]["id"], False)


def http_deep(
    client: Any,
    store: Any,
    scope: Any,
    params: dict[str, Any],
    fraction: float,
    limit: int,
    repeat: int,
    chain_pages: int,
) -> dict[str, Any]:
    _, first = timed_get(client, "/api/v2/jobs/", {**params, "limit": 1})
    position = max(limit, int(first["count"] * fraction) // limit * limit)
    cursor = deep_cursor(store, scope, params, position)
    if cursor is None:
        return {"position": position, "skipped": "not enough rows"}
    keyset, offset = [], []
    keyset_body = offset_body = None
    for round_ in range(repeat + 1):
        ms_k, keyset_body = timed_get(client, "/api/v2/jobs/", {**params, "limit": limit, "cursor": cursor})
        ms_o, offset_body = timed_get(client, "/api/v2/jobs/", {**params, "limit": limit, "offset": position})
        if round_:  # the first round warms both up
            keyset.append(ms_k)
            offset.append(ms_o)
    assert keyset_body is not None and offset_body is not None
    same = [r["id"] for r in keyset_body["results"]] == [r["id"] for r in offset_body["results"]]
    chain = None
    if keyset_body["next"]:
        cursor_next = parse_qs(urlsplit(keyset_body["next"]).query)["cursor"][0]
        chain = http_keyset_chain(client, {**params, "cursor": cursor_next}, limit, chain_pages - 1)
    k, o = summarize(keyset, (50, 99)), summarize(offset, (50, 99))
    return {
        "position": position,
        "matching_rows": first["count"],
        "same_rows_by_cursor_and_offset": same,
        "keyset_cursor_ms": k,
        "offset_ms": o,
        "offset_over_keyset_p50": round(o["p50"] / k["p50"], 2) if k.get("p50") else None,
        "keyset_chain_from_there": chain,
    }


def http_deep_keyset(
    client: Any,
    store: Any,
    scope: Any,
    cases: list[tuple[str, dict[str, Any]]],
    fraction: float,
    limit: int,
    repeat: int,
) -> dict[str, Any]:
    """For every case, the keyset page at ``fraction`` of its matching rows (a client that paged
    that deep by ``next``), timed ``repeat`` times."""
    out: dict[str, Any] = {}
    for label, params in cases:
        _, first = timed_get(client, "/api/v2/jobs/", {**params, "limit": 1})
        position = int(first["count"] * fraction) // limit * limit
        if position < limit:
            out[label] = {"position": position, "skipped": "fits on the first pages"}
            continue
        cursor = deep_cursor(store, scope, params, position)
        if cursor is None:
            out[label] = {"position": position, "skipped": "not enough rows"}
            continue
        query = {**params, "limit": limit, "cursor": cursor}
        timed_get(client, "/api/v2/jobs/", query)
        samples = [timed_get(client, "/api/v2/jobs/", query)[0] for _ in range(repeat)]
        out[label] = {"position": position, **summarize(samples, (50, 99))}
    return out


def http_modzy(client: Any, cases: list[tuple[str, dict[str, Any]]], limit: int, repeat: int) -> Any:
    """Modzy's history: page 1 and page 20 (it pages by number, i.e. by offset) per case."""
    out = {}
    for label, params in cases:
        entry: dict[str, Any] = {}
        for page in (1, 20):
            query = {**params, "per-page": limit, "page": page}
            timed_get(client, "/api/jobs/history", query)
            samples, body = [], None
            for _ in range(repeat):
                ms, body = timed_get(client, "/api/jobs/history", query)
                samples.append(ms)
            entry[f"page_{page}"] = {"rows": len(body or []), **summarize(samples, (50, 99))}
        out[label] = entry
    return out


# --------------------------------------------------------------------------- store level
class StatementLog:
    """Records the SQL a block runs (statement + processed parameters) to EXPLAIN it afterwards."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine = engine
        self.active = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if self.active and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters))

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[tuple[str, Any]]]:
        self.statements = []
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


def explain(store: Any, statement: str, parameters: Any) -> list[str]:
    prefix = "EXPLAIN QUERY PLAN " if store.db.is_sqlite else "EXPLAIN "
    with store.db.read() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).all()
    return [str(r[-1]) for r in rows]


def store_first_pages(
    store: Any, scope: Any, cases: list[tuple[str, dict[str, Any]]], limit: int, repeat: int, plans: bool
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from conveyor.store.tables import jobs

    recorder = StatementLog(store.db.engine)
    out: dict[str, Any] = {}
    for label, params in cases:
        q = history_query(params, limit)
        where = store.history.filters(scope, q)
        count_sql = select(func.count()).select_from(jobs).where(*where)
        with recorder.capture() as statements:
            store.history.page(scope, q)
        store.history.page(scope, q)
        page_ms, count_ms = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            store.history.page(scope, q)
            page_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            with store.db.read() as conn:
                conn.execute(count_sql).scalar_one()
            count_ms.append((time.perf_counter() - started) * 1000)
        page, count = summarize(page_ms, (50, 99)), summarize(count_ms, (50, 99))
        entry: dict[str, Any] = {
            "page_ms": page,
            "count_query_ms": count,
            "count_share_of_page_p50": round(count["p50"] / page["p50"], 2) if page.get("p50") else None,
        }
        if plans:
            entry["plans"] = shape_plans(store, statements)
        deep = deep_store_page(store, scope, params, q, limit, repeat, recorder, plans)
        if deep is not None:
            entry["deep_keyset_page_ms"] = deep
        out[label] = entry
    return out


def shape_plans(store: Any, statements: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """The plan of each statement a page ran: the count, the candidate probe, the row fetch."""
    plans: dict[str, list[str]] = {}
    for sql, parameters in statements:
        lowered = sql.lower()
        if "count(" in lowered:
            name = "count"
        elif lowered.lstrip().startswith("select jobs.id") and "join" not in lowered:
            name = "ids (filter first)"
        elif "explain" in lowered:
            continue
        else:
            name = "rows"
        while name in plans:
            name += "'"
        plans[name] = explain(store, sql, parameters)
    return plans


def deep_store_page(
    store: Any,
    scope: Any,
    params: dict[str, Any],
    q: Any,
    limit: int,
    repeat: int,
    recorder: StatementLog,
    plans: bool,
) -> dict[str, Any] | None:
    """The keyset page at 90 % of the matching rows, in-process, with its plans."""
    from dataclasses import replace

    count = store.history.page(scope, replace(q, limit=1)).count
    position = int(count * 0.9) // limit * limit
    if position < limit:
        return None
    cursor = deep_cursor(store, scope, params, position)
    if cursor is None:
        return None
    deep_q = replace(q, cursor=cursor)
    with recorder.capture() as statements:
        store.history.page(scope, deep_q)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        store.history.page(scope, deep_q)
        samples.append((time.perf_counter() - started) * 1000)
    entry: dict[str, Any] = {"position": position, **summarize(samples, (50, 99))}
    if plans:
        entry["plans"] = shape_plans(store, statements)
    return entry


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace, database_url: str | None, data_dir: Path) -> dict[str, Any]:
    from conveyor.domain.access import Scope
    from conveyor.settings import Settings
    from conveyor.store import Store

    if args.with_load and not args.under_load:
        args.under_load = (
            f"{args.with_load} pollers of bench/load.py's generator on the same server (status reads, "
            "history pages and SSE streams, as in the load benchmark)"
        )
    env = bench_env(data_dir, database_url=database_url)
    run_cli(["db", "upgrade"], env)
    key = create_key(env, name="bench")
    settings = Settings(data_dir=data_dir, database_url=database_url)
    store = Store(settings)
    try:
        seeded = seed_or_reuse(store, args)
        if args.seed_only:
            return {"seed": seeded}
        scope = Scope(seeded["account_id"])
        cases = first_page_cases(seeded)
        result: dict[str, Any] = {"seed": seeded}
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(running_server(data_dir, workers=0, env=env, key=key))
            client = stack.enter_context(server.client())
            if args.with_load:
                result["load"] = stack.enter_context(background_load(server, store, args.with_load, data_dir))
            log("HTTP: first pages")
            result["http_first_page_ms"] = http_first_pages(client, cases, args.limit, args.repeat)
            log("HTTP: deep keyset page of every case")
            result["http_deep_keyset_ms"] = http_deep_keyset(
                client, store, scope, cases, args.deep, args.limit, args.repeat
            )
            log("HTTP: Modzy history")
            result["http_modzy_ms"] = http_modzy(client, modzy_cases(seeded), args.limit, args.repeat)
            log("HTTP: keyset chains")
            result["http_keyset_next_pages_ms"] = {
                label: http_keyset_chain(client, params, args.limit, args.chain_pages)
                for label, params in [
                    ("no filter", {}),
                    ("status=SUCCESS", {"status": "SUCCESS"}),
                    ("pipeline=digits", {"pipeline": "digits"}),
                    ("ordering=name", {"ordering": "name"}),
                ]
            }
            log("HTTP: deep position, cursor vs offset")
            result["http_deep_position"] = {
                label: http_deep(
                    client, store, scope, params, args.deep, args.limit, args.repeat, args.chain_pages
                )
                for label, params in [("no filter", {}), ("status=SUCCESS", {"status": "SUCCESS"})]
            }
            log("store level: HistoryRepository.page in-process")
            result["store_first_page"] = store_first_pages(
                store, scope, cases, args.limit, args.repeat, plans=not args.no_plans
            )
        result["summary"] = summary(result, cases)
        print_table(result)
        return result
    finally:
        store.close()


@contextlib.contextmanager
def background_load(server: Any, store: Any, pollers: int, data_dir: Path) -> Iterator[dict[str, Any]]:
    """``load.py``'s generator (status, history and SSE pollers) against this run's server for as
    long as the block runs; its figures (errors, latencies, requests/s) land in the yielded dict."""
    from sqlalchemy import select

    from conveyor.store.tables import jobs

    with store.db.read() as conn:
        newest = conn.execute(select(jobs.c.id, jobs.c.uuid).order_by(jobs.c.id.desc()).limit(200)).all()
    targets = data_dir / "load-targets.json"
    targets.write_text(json.dumps([{"id": r.id, "job_identifier": r.uuid} for r in newest]))
    command = generator_command(server.url, server.key, targets, pollers=pollers, seconds=LOAD_MAX_SECONDS)
    log(f"background load: {pollers} pollers (status, history, SSE) on the same server")
    generator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    figures: dict[str, Any] = {"pollers": pollers}
    try:
        time.sleep(5)  # let the pollers ramp up
        yield figures
    finally:
        generator.send_signal(signal.SIGTERM)
        try:
            out, _ = generator.communicate(timeout=120)
            report = json.loads(out)
            figures.update(
                seconds=report["seconds"],
                errors=sum(sum(k["errors"].values()) for k in report["kinds"].values()),
                kinds={
                    kind: {"requests_per_second": k["requests_per_second"], "latency_ms": k["latency_ms"]}
                    for kind, k in report["kinds"].items()
                },
            )
        except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError) as exc:
            generator.kill()
            figures["error"] = f"load generator gave no figures: {exc!r}"


def _worst(entries: dict[str, Any], pick: Any) -> dict[str, Any]:
    measured = {label: pick(v) for label, v in entries.items() if pick(v) is not None}
    if not measured:
        return {"p99_ms": None, "case": None}
    label = max(measured, key=lambda k: measured[k])
    return {"p99_ms": measured[label], "case": label}


def summary(result: dict[str, Any], cases: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    first = result["http_first_page_ms"]
    worst = {
        "http_first_page": _worst(first, lambda v: v["p99"]),
        "http_deep_keyset_page": _worst(result["http_deep_keyset_ms"], lambda v: v.get("p99")),
        "http_modzy_page_1": _worst(result["http_modzy_ms"], lambda v: v["page_1"]["p99"]),
        "http_modzy_page_20": _worst(result["http_modzy_ms"], lambda v: v["page_20"]["p99"]),
        "store_first_page": _worst(result["store_first_page"], lambda v: v["page_ms"]["p99"]),
        "store_deep_keyset_page": _worst(
            result["store_first_page"], lambda v: v.get("deep_keyset_page_ms", {}).get("p99")
        ),
    }
    overall = max((w["p99_ms"] for w in worst.values() if w["p99_ms"] is not None), default=None)
    return {
        "http_first_page_p50_ms_median_over_filters": sorted(v["p50"] for v in first.values())[
            len(cases) // 2
        ],
        "http_first_page_worst_p99_ms": worst["http_first_page"]["p99_ms"],
        "http_first_page_worst_filter": worst["http_first_page"]["case"],
        "store_page_worst_p99_ms": worst["store_first_page"]["p99_ms"],
        "worst": worst,
        "worst_p99_ms_any_shape": overall,
        "target_p99_ms": TARGET_P99_MS,
        "target_met": overall is not None and overall < TARGET_P99_MS,
        "http_deep_keyset_p50_ms": result["http_deep_position"]["no filter"]
        .get("keyset_cursor_ms", {})
        .get("p50"),
        "http_deep_offset_p50_ms": result["http_deep_position"]["no filter"].get("offset_ms", {}).get("p50"),
    }


def print_table(result: dict[str, Any]) -> None:
    """p50/p99 per case and each query's plan, on stderr (the JSON on stdout has them too)."""
    log("case | HTTP first p50/p99 | HTTP deep keyset p50/p99 | store first p99 | store deep p99")
    for label, v in result["http_first_page_ms"].items():
        deep = result["http_deep_keyset_ms"].get(label, {})
        store = result["store_first_page"].get(label, {})
        store_deep = store.get("deep_keyset_page_ms", {})
        log(
            f"  {label:42s} {v['p50']:7.1f} {v['p99']:7.1f} | {deep.get('p50', '-')!s:>7} "
            f"{deep.get('p99', '-')!s:>7} | {store.get('page_ms', {}).get('p99', '-')!s:>7} | "
            f"{store_deep.get('p99', '-')!s:>7}"
        )
        for name, plan in {
            **store.get("plans", {}),
            **{f"deep {k}": p for k, p in store_deep.get("plans", {}).items()},
        }.items():
            log(f"      {name}: {' / '.join(plan) if len(plan) < 8 else ' / '.join(plan[:8]) + ' ...'}")
    log("Modzy case | page 1 p50/p99 | page 20 p50/p99")
    for label, v in result["http_modzy_ms"].items():
        log(
            f"  {label:42s} {v['page_1']['p50']:7.1f} {v['page_1']['p99']:7.1f} | "
            f"{v['page_20']['p50']:7.1f} {v['page_20']['p99']:7.1f}"
        )
    log(f"worst p99 per section: {result['summary']['worst']}")


def build_parser() -> argparse.ArgumentParser:
    """The options of this script (also used by ``history_scale.py`` for its defaults)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to seed (default 100000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per case (default 30)")
    parser.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    parser.add_argument("--chain-pages", type=int, default=50, help="`next` links followed (default 50)")
    parser.add_argument(
        "--deep", type=float, default=0.9, help="deep position as a share of the matching rows (default 0.9)"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql+psycopg://user@host:port/NAME: a temporary database NAME_<random> is created "
        "and dropped",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="run ANALYZE after seeding on SQLite (always done on PostgreSQL, with VACUUM)",
    )
    parser.add_argument("--no-plans", action="store_true", help="leave the query plans out of the report")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument(
        "--reuse-seed",
        action="store_true",
        default=os.environ.get("CONVEYOR_BENCH_REUSE_SEED") == "1",
        help="seed into a kept database (PostgreSQL: <name>_seed_<jobs>; SQLite: a kept data directory) "
        "and reuse it when it already holds --jobs jobs (env CONVEYOR_BENCH_REUSE_SEED=1)",
    )
    parser.add_argument("--seed-only", action="store_true", help="seed (or check the kept seed) and stop")
    parser.add_argument(
        "--under-load",
        default=os.environ.get("CONVEYOR_BENCH_UNDER_LOAD") or None,
        metavar="NOTE",
        help="say in the report that this run was measured while another load ran (e.g. the "
        "200-poller load bench); recorded as is (env CONVEYOR_BENCH_UNDER_LOAD)",
    )
    parser.add_argument(
        "--with-load",
        type=int,
        default=0,
        metavar="POLLERS",
        help="run bench/load.py's generator (status, history and SSE pollers) against the same server "
        "while measuring (e.g. 200; the issue-17 load); the report says so",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3000 jobs, 3 repeats, 10 pages")
    return parser


@contextlib.contextmanager
def database_for(args: argparse.Namespace) -> Iterator[tuple[str | None, Path, str]]:
    """(database URL or None for SQLite, data directory, description) for one run.

    Without ``--reuse-seed``: a temporary data directory and (PostgreSQL) a temporary database,
    both removed afterwards. With it: a database ``<name>_seed_<jobs>`` on the PostgreSQL server
    (created when missing) or a SQLite data directory ``<tmp>/conveyor-bench-history-seed-<jobs>``,
    both kept, so the next run measures the same seeded history without seeding it again."""
    if not args.reuse_seed:
        with temp_dir(keep=args.keep) as data_dir:
            if args.database_url:
                with postgres_database(args.database_url) as url:
                    yield url, data_dir, "postgresql (temporary database)"
            else:
                yield None, data_dir, "sqlite (embedded default)"
        return
    dialect = "postgresql" if args.database_url else "sqlite"
    data_dir = Path(tempfile.gettempdir()) / f"conveyor-bench-history-seed-{dialect}-{args.jobs}"
    data_dir.mkdir(exist_ok=True)
    if not args.database_url:
        yield None, data_dir, f"sqlite (embedded default, seed kept in {data_dir})"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(args.database_url)
    name = f"{parsed.database or 'conveyor_bench'}_seed_{args.jobs}"
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    url = parsed.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    yield url, data_dir, f"postgresql (seed kept in database {name})"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.repeat, args.chain_pages = 3000, 3, 10

    with database_for(args) as (url, data_dir, database):
        figures = run(args, url, data_dir)
    if args.seed_only:
        emit({"benchmark": "history", "params": {"jobs": args.jobs, "database": database}, **figures})
        return
    emit(
        {
            "benchmark": "history",
            "machine": machine_info(),
            "params": {
                "jobs": args.jobs,
                "repeat": args.repeat,
                "limit": args.limit,
                "chain_pages": args.chain_pages,
                "deep_fraction": args.deep,
                "database": database,
                "analyzed": args.analyze or bool(args.database_url),
                "under_load": args.under_load,
                "reused_seed": bool(figures["seed"].get("reused")),
            },
            **figures,
            "notes": [
                "HTTP figures: one keep-alive httpx client, server with no workers, wall time per request "
                "including JSON serialization of the page.",
                "Every page (keyset or offset) also runs COUNT(*) over the filter: see store_first_page "
                "for its share.",
                "Shared 2-core machine: noisy, compare within one run.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
