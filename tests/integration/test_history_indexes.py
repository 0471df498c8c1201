"""History answers the same with and without the name search indexes of migrations 0012 and 0013.

A few hundred varied jobs (names with mixed case, ``%``, ``_``, quotes, non-ASCII; NULL and tied
durations; tied timestamps; several statuses, pipelines, projects and keys) are listed through
``HistoryRepository`` with every filter and ordering, every keyset page forward and back and an
offset page, on the schema at head and again after a downgrade to 0011 (no FTS5 table, no key
index, no short-gram index on PostgreSQL). Both must agree with each other, and the matching sets
with a plain Python reference. Both query paths are exercised: "filter first" (few matches) and
the ordering's index walk (many matches, forced with a tiny count limit and candidate limit).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from conveyor.domain.access import Scope
from conveyor.domain.status import JobStatus, resolve_status_filter
from conveyor.store import Store, history, migrate
from conveyor.store.history import HistoryQuery, HistoryRepository, gram_candidates
from conveyor.store.tables import NAME_SEARCH_FTS, jobs, pipelines
from tests.helpers.backends import dialect_store

JOBS = 240
PAGE = 37
WORDS = ["alpha", "Beta", "GAMMA", "delta_x", "eps%on", 'quo"te', "école", "ÉCOLE", "zeta-7", "ab", "Ω"]
STATUSES = ["SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "REVOKED", "CREATED", "PENDING", "STARTED"]
SEARCHES = ["alpha", "ALPHA", "ZETA-7", "delta_x", "a_x", "eps%on", "%", "_", 'quo"te', '"', "école",
            "ÉCOLE", "ab", "b", "Ω", "no-such-name", "ta-7-1", " "]  # fmt: skip
ORDER_KEYS = ["created_at", "updated_at", "status", "duration", "name", "id"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with dialect_store(request.param, tmp_path) as made:
        yield made


def seed(store: Store) -> tuple[Scope, dict[str, int], list[int]]:
    rng = random.Random(17)
    account_id, default_project = store.auth.ensure_defaults()
    research = store.auth.ensure_project(account_id, "research", "Research")
    with store.db.read() as conn:
        pipeline_ids = {r.slug: r.id for r in conn.execute(select(pipelines.c.slug, pipelines.c.id))}
    start = datetime(2026, 6, 1, tzinfo=UTC)
    rows = []
    for n in range(JOBS):
        created = start + timedelta(minutes=n // 3)  # ties of three
        status = rng.choice(STATUSES)
        words = rng.sample(WORDS, rng.randrange(1, 3))
        rows.append(
            {
                "uuid": f"00000000-0000-4000-8000-{n:012d}",
                "name": f"{'-'.join(words)}-{n % 17}",
                "account_id": account_id,
                "project_id": research if n % 4 == 0 else default_project,
                "pipeline_id": rng.choice([*pipeline_ids.values(), None]),
                "job_type": "data_export" if n % 9 == 0 else "ml",
                "status": status,
                "dispatch_mode": "internal",
                "max_failed_ratio": 0.5,
                "config": {},
                "input_summary": {},
                "stage_params": {},
                "submitted_by": rng.choice(["keyA", "keyB", "keyC", None]),
                "created_at": created,
                "updated_at": created + timedelta(minutes=rng.choice([0, 0, 5, 60, 600])),
                "elapsed_time_ms": rng.choice([None, None, 10, 10, 250, rng.randrange(10_000)]),
            }
        )
    with store.db.write() as conn:
        conn.execute(insert(jobs), rows)
        # A rename and a delete after insert: the FTS5 table must follow both.
        first, second = conn.execute(select(jobs.c.id).order_by(jobs.c.id).limit(2)).scalars().all()
        conn.execute(update(jobs).where(jobs.c.id == first).values(name="Renamed-ALPHA-row"))
        conn.execute(delete(jobs).where(jobs.c.id == second))
    if not store.db.is_sqlite:
        with store.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
    with store.db.read() as conn:
        ids = list(conn.execute(select(jobs.c.id)).scalars())
    return Scope(account_id), {"research": research, **pipeline_ids}, ids


def queries(named: dict[str, int]) -> list[HistoryQuery]:
    pipeline_id = next(v for k, v in named.items() if k != "research")
    june = datetime(2026, 6, 1, tzinfo=UTC)
    base = [
        HistoryQuery(),
        HistoryQuery(statuses=resolve_status_filter("pending")),
        HistoryQuery(statuses=resolve_status_filter("terminated")),
        HistoryQuery(statuses=frozenset({JobStatus.FAILURE})),
        HistoryQuery(project_id=named["research"]),
        HistoryQuery(pipeline=str(pipeline_id)),
        HistoryQuery(job_type="data_export"),
        HistoryQuery(created_after=june + timedelta(minutes=20), created_before=june + timedelta(minutes=70)),
        HistoryQuery(updated_after=june + timedelta(minutes=30), updated_before=june + timedelta(hours=5)),
        HistoryQuery(submitted_by="keyB"),
        HistoryQuery(submitted_by_any=["keyA", "keyC"]),
        HistoryQuery(submitted_by="nobody"),
        HistoryQuery(search="alpha", statuses=frozenset({JobStatus.SUCCESS}), project_id=named["research"]),
        *[HistoryQuery(search=s) for s in SEARCHES],
    ]
    # Every ordering for a few shapes: no filter, a common and a rare search, a status.
    shaped = [HistoryQuery(), HistoryQuery(search="beta"), HistoryQuery(search="zeta-7-1")]
    shaped.append(HistoryQuery(statuses=frozenset({JobStatus.FAILURE})))
    for q in shaped:
        for key in ORDER_KEYS:
            for ordering in (key, f"-{key}"):
                base.append(HistoryQuery(**{**q.__dict__, "ordering": ordering}))
    return base


def listing(repo: HistoryRepository, scope: Scope, q: HistoryQuery) -> dict[str, Any]:
    """Every page forward by cursor, back from the last page, and one offset page."""
    q = HistoryQuery(**{**q.__dict__, "limit": PAGE})
    forward: list[int] = []
    page = repo.page(scope, q)
    pages = [page]
    forward += [r["id"] for r in page.rows]
    while page.next_cursor:
        page = repo.page(scope, HistoryQuery(**{**q.__dict__, "cursor": page.next_cursor}))
        pages.append(page)
        forward += [r["id"] for r in page.rows]
    backward: list[int] = []
    if len(pages) > 1:
        page = pages[-1]
        backward = [r["id"] for r in page.rows]
        while page.previous_cursor:
            page = repo.page(scope, HistoryQuery(**{**q.__dict__, "cursor": page.previous_cursor}))
            backward = [r["id"] for r in page.rows] + backward
    offset = repo.page(scope, HistoryQuery(**{**q.__dict__, "offset": PAGE}))
    return {
        "forward": forward,
        "backward": backward,
        "offset": [r["id"] for r in offset.rows],
        "count": pages[0].count if pages[0].count_exact else None,
    }


def reference_ids(store: Store, q: HistoryQuery) -> set[int]:
    """The matching set computed in Python from the raw rows (ASCII-only case folding on SQLite, as
    its LIKE; Unicode on PostgreSQL, as ILIKE)."""
    with store.db.read() as conn:
        rows = list(conn.execute(select(jobs)).mappings())
    fold = (lambda s: s.translate(ASCII_LOWER)) if store.db.is_sqlite else str.lower

    def keep(r: Any) -> bool:
        return (
            (q.statuses is None or r["status"] in {s.value for s in q.statuses})
            and (q.project_id is None or r["project_id"] == q.project_id)
            and (q.pipeline is None or r["pipeline_id"] == int(q.pipeline))
            and (q.job_type is None or r["job_type"] == q.job_type)
            and (q.created_after is None or r["created_at"] >= q.created_after)
            and (q.created_before is None or r["created_at"] < q.created_before)
            and (q.updated_after is None or r["updated_at"] >= q.updated_after)
            and (q.updated_before is None or r["updated_at"] < q.updated_before)
            and (q.submitted_by is None or r["submitted_by"] == q.submitted_by)
            and (q.submitted_by_any is None or r["submitted_by"] in q.submitted_by_any)
            and (q.search is None or fold(q.search) in fold(r["name"]))
        )

    return {r["id"] for r in rows if keep(r)}


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def everything(store: Store, scope: Scope, named: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for repo in (
        HistoryRepository(store.db),  # few matches: "filter first" for nearly every query
        HistoryRepository(store.db, exact_count_limit=3, count_cache_seconds=0),  # the index walks
    ):
        for q in queries(named):
            out.append(listing(repo, scope, q))
    return out


def test_history_is_the_same_with_and_without_the_0012_and_0013_indexes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope, named, _ = seed(store)
    if store.db.is_sqlite:  # the FTS5 table follows inserts, the rename and the delete
        with store.db.read() as conn:
            indexed = conn.execute(
                text(f"SELECT rowid FROM {NAME_SEARCH_FTS} WHERE {NAME_SEARCH_FTS} MATCH '\"renamed-alpha\"'")
            ).scalars()
            assert list(indexed) == [
                conn.execute(select(jobs.c.id).where(jobs.c.name == "Renamed-ALPHA-row")).scalar_one()
            ]
            integrity = (
                f"INSERT INTO {NAME_SEARCH_FTS}({NAME_SEARCH_FTS}, rank) VALUES ('integrity-check', 1)"
            )
            conn.exec_driver_sql(integrity)  # raises when the index and jobs disagree
    else:  # short searches narrow to the grams' candidates, which hold the search exactly
        repo = HistoryRepository(store.db)
        assert repo._candidates("ab") is not None and repo._candidates("alpha") is None
        with store.db.read() as conn:
            for short in ("ab", "É", "Ω", "%", " "):
                candidates = set(conn.execute(select(jobs.c.id).where(gram_candidates(short))).scalars())
                assert candidates == reference_ids(store, HistoryQuery(search=short)), short
    monkeypatch.setattr(history, "CANDIDATE_LIMIT", 7)
    monkeypatch.setattr(history, "FTS_CANDIDATE_LIMIT", 7)
    after = everything(store, scope, named)

    # Every listing is complete, in order both ways, and matches the Python reference set.
    for q, got in zip(queries(named) * 2, after, strict=True):
        wanted = reference_ids(store, q)
        assert set(got["forward"]) == wanted, (q, got)
        assert len(got["forward"]) == len(wanted), q
        assert not got["backward"] or got["backward"] == got["forward"], q
        assert got["offset"] == got["forward"][PAGE : 2 * PAGE], q
        assert got["count"] in (None, len(wanted)), q
    assert any(len(g["forward"]) > 100 for g in after) and any(0 < len(g["forward"]) < 5 for g in after)

    store.close()  # no connection holds the schema while it changes
    migrate.downgrade(store.db.url, "0011")
    with store.db.read() as conn:
        if store.db.is_sqlite:
            gone = conn.execute(text("SELECT name FROM sqlite_master WHERE name LIKE 'jobs_name_fts%'"))
        else:
            gone = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE indexname = 'ix_jobs_name_grams'")
            )
        assert gone.all() == []
    before = everything(store, scope, named)
    assert before == after
