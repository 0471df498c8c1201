"""Job history: filters, ordering, and keyset (cursor) pagination that stays fast at scale."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    RowMapping,
    Select,
    String,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql

from conveyor.domain.access import Scope
from conveyor.domain.status import JobStatus
from conveyor.errors import InvalidInput
from conveyor.store.counting import Count, JobCounter
from conveyor.store.database import Database
from conveyor.store.jobs import JobRepository, scope_clauses
from conveyor.store.pull import pipeline_ids
from conveyor.store.tables import NAME_GRAMS_INDEX, NAME_SEARCH_FTS, jobs, pipelines

# A filter matching at most this many rows is served "filter first": its ids are read through the
# filters' own indexes (trigram, FTS5, status, ...), then the page is sorted from those rows by
# primary key. Above it the page walks the ordering's index. A name search (whose selectivity the
# planner guesses badly) probes for this many candidates; other filters use the bounded count.
CANDIDATE_LIMIT = 5000
# The same bound for SQLite's FTS5 candidates, lower: SQLite sorts a few thousand rows fetched by
# id slower than it walks an index past non-matching names (2000 candidates at 10k jobs: ~3x).
FTS_CANDIDATE_LIMIT = 1000
# A date range with at most this many rows (estimated), ordered by another time, is read through
# its own index and sorted on PostgreSQL (see HistoryRepository._page_where).
RANGE_SORT_LIMIT = 60_000
# How a page treats its name search (see HistoryRepository._search_mode): few or many candidates
# in a name index that narrows it (FTS5 on SQLite, the short-gram index on PostgreSQL), or the
# match alone (PostgreSQL's trigram index serves a LIKE of 3+ characters itself).
FEW_CANDIDATES, MANY_CANDIDATES, LIKE_ONLY = "few-candidates", "many-candidates", "like"
# Trigram indexes (FTS5's tokenizer, pg_trgm) see 3-character windows: shorter searches cannot use
# them. On PostgreSQL those go to the 1- and 2-character grams of migration 0013.
FTS_MIN_LENGTH = 3

ORDERINGS: dict[str, Any] = {
    "created_at": jobs.c.created_at,
    "updated_at": jobs.c.updated_at,
    "status": jobs.c.status,
    # A literal -1 (not a bound parameter) so the expression matches ix_jobs_account_duration.
    "duration": func.coalesce(jobs.c.elapsed_time_ms, literal_column("-1")),
    "name": jobs.c.name,
    "id": jobs.c.id,
}
DATETIME_ORDERINGS = {"created_at", "updated_at"}
# The JSON type of a cursor's sort value per ordering (datetimes travel as ISO text): a cursor
# edited by hand must get a 400, never reach the database as a list, an object or a null.
CURSOR_VALUE_TYPES: dict[str, type] = {
    "created_at": str,
    "updated_at": str,
    "status": str,
    "duration": int,
    "name": str,
    "id": int,
}


@dataclass
class HistoryQuery:
    statuses: frozenset[JobStatus] | None = None
    pipeline: str | None = None  # slug or id
    project_id: int | None = None
    job_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    search: str | None = None
    submitted_by: str | None = None
    ordering: str = "-created_at"
    limit: int = 50
    offset: int | None = None
    cursor: str | None = None
    # Submitted by any of these key prefixes (Modzy's `user` filter: the keys of one name).
    submitted_by_any: list[str] | None = None
    # Antenna's worker filters: `dispatch_mode=async_api` and `pipeline__slug__in=a,b` (an
    # installed slug, or a pull pipeline's registered slug, ``pull:<project>/<slug>``).
    dispatch_mode: str | None = None
    pipeline_slugs: list[str] | None = None


@dataclass
class HistoryPage:
    count: int
    count_exact: bool
    rows: list[RowMapping]
    next_cursor: str | None
    previous_cursor: str | None
    next_offset: int | None
    previous_offset: int | None


def _parse_ordering(value: str) -> tuple[str, bool]:
    descending = value.startswith("-")
    key = value.lstrip("-")
    if key not in ORDERINGS:
        raise InvalidInput(
            f"Cannot order by {key!r}; use one of {', '.join(ORDERINGS)} (prefix - for descending)."
        )
    return key, descending


def encode_cursor(key: str, value: Any, row_id: int, backwards: bool) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps({"k": key, "v": value, "i": row_id, "b": backwards}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key: str) -> tuple[Any, int, bool]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["k"] != key:
            raise ValueError("ordering changed")
        if not isinstance(data["v"], CURSOR_VALUE_TYPES[key]) or isinstance(data["v"], bool):
            raise ValueError("sort value of the wrong type")
        value: Any = data["v"]
        if key in DATETIME_ORDERINGS:
            value = datetime.fromisoformat(value)
        return value, int(data["i"]), bool(data["b"])
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidInput("Invalid or stale cursor; start again from the first page.") from None


class HistoryRepository:
    def __init__(
        self, db: Database, *, exact_count_limit: int = 1000, count_cache_seconds: float = 10.0
    ) -> None:
        self.db = db
        self.counter = JobCounter(
            db.dialect, exact_limit=exact_count_limit, cache_seconds=count_cache_seconds
        )
        self._fts: bool | None = None
        self._grams: bool | None = None

    def _has_grams(self) -> bool:
        """PostgreSQL with the short-search index of migration 0013."""
        if self._grams is None:
            self._grams = not self.db.is_sqlite and self._exists(
                "SELECT 1 FROM pg_indexes WHERE tablename = 'jobs' AND indexname = :name", NAME_GRAMS_INDEX
            )
        return self._grams

    def _exists(self, probe: str, name: str) -> bool:
        """Whether the catalog ``probe`` finds the schema object ``name``."""
        with self.db.read() as conn:
            return conn.execute(text(probe), {"name": name}).first() is not None

    def _candidates(self, search: str) -> ColumnElement[bool] | None:
        """The clause narrowing a name search to an index's candidates (a superset of its matches),
        or None where no index narrows it (the LIKE alone then)."""
        if len(search) >= FTS_MIN_LENGTH:
            return fts_candidates(search) if self._has_fts() else None
        return gram_candidates(search) if self._has_grams() else None

    def _has_fts(self) -> bool:
        """SQLite with the name search table of migration 0012 (skipped where FTS5 is missing)."""
        if self._fts is None:
            self._fts = self.db.is_sqlite and self._exists(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name", NAME_SEARCH_FTS
            )
        return self._fts

    def _search_mode(self, conn: Any, q: HistoryQuery) -> str | None:
        """FEW_CANDIDATES when the name index narrowing the search (SQLite's FTS5 for 3+
        characters, PostgreSQL's short grams for 1-2) has at most its candidate bound (the count and
        the rows then come from them), else MANY_CANDIDATES (the match alone: matches are dense
        enough that the ordering's index meets a page of them soon, while reading every candidate
        would cost more). LIKE_ONLY where no such index applies (PostgreSQL's trigram GIN index
        serves a LIKE of 3+ characters itself)."""
        if not q.search:
            return None
        candidates = self._candidates(q.search)
        if candidates is None:
            return LIKE_ONLY
        bound = FTS_CANDIDATE_LIMIT if self.db.is_sqlite else CANDIDATE_LIMIT
        if not self.db.is_sqlite and self.counter.estimate(conn, [candidates]) > 2 * bound:
            # The grams' statistics say "common" (a vowel): probing would read them for nothing.
            return MANY_CANDIDATES
        # SQLite counts in the FTS5 table itself (its candidates clause is an IN over it).
        source = text(NAME_SEARCH_FTS) if self.db.is_sqlite else jobs
        narrowing = _fts_match(q.search) if self.db.is_sqlite else candidates
        probe: Select[Any] = select(literal_column("1")).select_from(source).where(narrowing)
        seen = conn.execute(select(func.count()).select_from(probe.limit(bound + 1).subquery()))
        return FEW_CANDIDATES if seen.scalar_one() <= bound else MANY_CANDIDATES

    def filters(
        self, scope: Scope, q: HistoryQuery, *, candidates: bool = False
    ) -> list[ColumnElement[bool]]:
        """The WHERE clauses of a history query. With ``candidates`` a name search also narrows to
        its name index's candidates (SQLite's FTS5 of migration 0012, PostgreSQL's short grams of
        0013; a superset: the LIKE still decides)."""
        where: list[ColumnElement[bool]] = scope_clauses(scope)
        if q.submitted_by_any is not None:
            where.append(jobs.c.submitted_by.in_(q.submitted_by_any))
        if q.statuses is not None and q.statuses != frozenset(JobStatus):
            where.append(status_clause(q.statuses))
        if q.pipeline:
            if q.pipeline.isdigit():
                where.append(jobs.c.pipeline_id == int(q.pipeline))
            else:
                # Resolve the slug first: a literal id list lets the planner use the pipeline index.
                with self.db.read() as conn:
                    ids = list(
                        conn.execute(select(pipelines.c.id).where(pipelines.c.slug == q.pipeline)).scalars()
                    )
                where.append(jobs.c.pipeline_id == ids[0] if len(ids) == 1 else jobs.c.pipeline_id.in_(ids))
        if q.pipeline_slugs is not None:
            with self.db.read() as conn:
                ids = pipeline_ids(conn, q.pipeline_slugs) if q.pipeline_slugs else []
            where.append(jobs.c.pipeline_id.in_(ids))
        if q.dispatch_mode:
            where.append(jobs.c.dispatch_mode == q.dispatch_mode)
        if q.project_id is not None:
            where.append(jobs.c.project_id == q.project_id)
        if q.job_type:
            where.append(jobs.c.job_type == q.job_type)
        if q.created_after:
            where.append(jobs.c.created_at >= q.created_after)
        if q.created_before:
            where.append(jobs.c.created_at < q.created_before)
        if q.updated_after:
            where.append(jobs.c.updated_at >= q.updated_after)
        if q.updated_before:
            where.append(jobs.c.updated_at < q.updated_before)
        if q.search:
            escaped = q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            if self.db.is_sqlite or len(q.search) >= FTS_MIN_LENGTH:
                where.append(jobs.c.name.ilike(f"%{escaped}%", escape="\\"))
            else:
                # PostgreSQL's ILIKE compares lower() of both sides (multi-byte encodings); spelt
                # so, the planner cannot pick the trigram index, which has no trigram of a short
                # search and would read every entry.
                pattern = func.lower(literal(f"%{escaped}%", String))
                where.append(func.lower(jobs.c.name).like(pattern, escape="\\"))
            if candidates:
                narrowing = self._candidates(q.search)
                if narrowing is not None:
                    where.append(narrowing)
        if q.submitted_by:
            where.append(jobs.c.submitted_by == q.submitted_by)
        return where

    def page(self, scope: Scope, q: HistoryQuery) -> HistoryPage:
        key, descending = _parse_ordering(q.ordering)
        column = ORDERINGS[key]
        with self.db.read() as conn:
            mode = self._search_mode(conn, q)
            where = self.filters(scope, q, candidates=mode == FEW_CANDIDATES)
            # Many candidates: their index's statistics still estimate the count better.
            narrowing = self._candidates(q.search) if mode == MANY_CANDIDATES and q.search else None
            counted = self.counter.count(
                conn,
                where,
                hint=[] if narrowing is None else [narrowing],
                estimate_first=mode in (LIKE_ONLY, MANY_CANDIDATES),
                want_ids=q.cursor is None,
            )
            count = counted.value
            if q.offset is not None and q.cursor is None:
                rows = self._offset_page(conn, scope, q, where, mode, counted, key, descending)
                exact = counted.exact
                if not exact and (rows or not q.offset) and len(rows) < q.limit:
                    count, exact = q.offset + len(rows), True  # an estimate, and the last page says
                return HistoryPage(
                    count,
                    exact,
                    rows,
                    None,
                    None,
                    q.offset + q.limit if q.offset + q.limit < count else None,
                    max(0, q.offset - q.limit) if q.offset > 0 else None,
                )
            backwards = False
            keyset: list[ColumnElement[bool]] = []
            cursor: tuple[Any, int, bool] | None = None
            if q.cursor:
                value, last_id, backwards = decode_cursor(q.cursor, key)
                # Forward in a descending order (or backward in an ascending one) means "smaller than".
                smaller = descending != backwards
                cursor = (value, last_id, smaller)
                keyset.append(_keyset(column, value, last_id, smaller))
            ascending_fetch = descending == backwards
            order = [column.asc(), jobs.c.id.asc()] if ascending_fetch else [column.desc(), jobs.c.id.desc()]
            page_where, two_step = self._page_where(conn, scope, q, where, mode, counted, keyset, key)
            if page_where is None:
                rows = []
            elif cursor is not None and self.db.is_sqlite and page_where[-1] is keyset[0]:
                rows = _ties_then_beyond(conn, page_where[:-1], column, *cursor, order, q.limit + 1)
            elif two_step:
                rows = _walk_rows(conn, page_where, order, q.limit + 1)
            else:
                rows = JobRepository.fetch_rows(conn, page_where, order, q.limit + 1)
        more = len(rows) > q.limit
        exact = counted.exact
        if not exact and q.cursor is None and not more:
            count, exact = len(rows), True  # an estimate, but the first page holds every match
        rows = rows[: q.limit]
        if backwards:
            rows.reverse()
        has_next = more if not backwards else True
        has_previous = (bool(q.cursor) and not backwards) or (backwards and more)
        next_cursor = (
            encode_cursor(key, _sort_value(rows[-1], key), rows[-1]["id"], False)
            if rows and has_next
            else None
        )
        prev_cursor = (
            encode_cursor(key, _sort_value(rows[0], key), rows[0]["id"], True)
            if rows and has_previous
            else None
        )
        return HistoryPage(count, exact, rows, next_cursor, prev_cursor, None, None)

    def _page_where(
        self,
        conn: Any,
        scope: Scope,
        q: HistoryQuery,
        where: list[ColumnElement[bool]],
        mode: str | None,
        counted: Count,
        keyset: list[ColumnElement[bool]],
        key: str,
    ) -> tuple[list[ColumnElement[bool]] | None, bool]:
        """The WHERE of the page's row fetch (None: no row matches), and whether to read the page
        in two steps (ids, then rows: _walk_rows).

        Few matches (the bounded count was exact, the FTS5 candidates are few, or a LIKE search
        finds at most CANDIDATE_LIMIT rows): their ids, read through the filters' own indexes, so
        the database sorts only those rows and the planner cannot walk the ordering's index hoping
        to meet matches early (at a million jobs a rare name could cost a scan). Many matches: the
        filters as they are, which the ordering's (column, id) index serves in order."""
        exact, count = counted.exact, counted.value
        if exact and count == 0:
            return None, False
        if counted.ids is not None and not keyset:  # the exact count's own ids: no second scan
            return [jobs.c.id.in_(counted.ids)], False
        # PostgreSQL estimates a count it does not make exact: when even that says "many", probing
        # would read thousands of matches for nothing.
        probe_like = mode == LIKE_ONLY and (self.db.is_sqlite or count <= CANDIDATE_LIMIT)
        if exact or mode == FEW_CANDIDATES or probe_like:
            bound = None if exact or mode == FEW_CANDIDATES else CANDIDATE_LIMIT + 1
            query = select(jobs.c.id).where(*where, *keyset)
            if bound is not None:
                query = query.limit(bound)
            ids = list(conn.execute(query).scalars())
            if bound is None or len(ids) < bound:
                return ([jobs.c.id.in_(ids)] if ids else None), False
        if mode in (LIKE_ONLY, MANY_CANDIDATES) and not self.db.is_sqlite:
            # Many matches: walk the ordering's index and test each name. The planner cannot tell
            # how many names match and may rather gather them all (200k at 1M jobs for a common
            # word) to sort them (~1 s); for this transaction's last query, sorting is ruled out.
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
            return [*where, *keyset], True
        if not self.db.is_sqlite and count <= RANGE_SORT_LIMIT and _range_apart_from(q, key):
            # A date range ordered by another key: its rows may sit together along the ordering's
            # index, which the planner takes for spread evenly and walks from one end past every
            # row outside the range (a week of updates 33 days back, by -created_at or by name:
            # 60-180k rows passed, 45-175 ms at 1M jobs). Read the range through its own index
            # and sort it (13-30 ms) instead.
            conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
            return [*where, *keyset], True
        return [*where, *keyset], False

    def _offset_page(
        self,
        conn: Any,
        scope: Scope,
        q: HistoryQuery,
        where: list[ColumnElement[bool]],
        mode: str | None,
        counted: Count,
        key: str,
        descending: bool,
    ) -> list[RowMapping]:
        column = ORDERINGS[key]
        order = [column.desc(), jobs.c.id.desc()] if descending else [column.asc(), jobs.c.id.asc()]
        page_where, two_step = self._page_where(conn, scope, q, where, mode, counted, [], key)
        if page_where is None:
            return []
        if two_step or (not self.db.is_sqlite and q.offset):
            # Skip the offset's rows as ids (an index-only scan where the filters allow) rather
            # than as joined job rows; the page's rows are read by id.
            return _walk_rows(conn, page_where, order, q.limit, offset=q.offset or 0)
        return JobRepository.fetch_rows(conn, page_where, order, q.limit, offset=q.offset or 0)


def status_clause(statuses: frozenset[JobStatus]) -> ColumnElement[bool]:
    """``status IN (...)`` with sorted literal values (safe: they come from the enum), so that the
    `pending` group matches the partial index ix_jobs_account_active_created."""
    values = sorted(s.value for s in statuses)
    return jobs.c.status.in_(bindparam("statuses", values, expanding=True, literal_execute=True))


def _fts_match(search: str) -> ColumnElement[bool]:
    """``jobs_name_fts MATCH`` the search as one quoted phrase (no character of it is FTS5 syntax);
    with the trigram tokenizer: the names holding it as a substring, case folded."""
    phrase = '"' + search.replace('"', '""') + '"'
    return literal_column(NAME_SEARCH_FTS).op("MATCH")(bindparam("fts_phrase", phrase, unique=True))


def gram_candidates(search: str) -> ColumnElement[bool]:
    """The names whose 1- and 2-character grams hold a short search (PostgreSQL, migration 0013):
    for a search of at most two characters, exactly the names containing it, case folded."""
    wanted: postgresql.array[Any] = postgresql.array([func.lower(literal(search, String))], type_=String)
    return func.conveyor_name_grams(jobs.c.name).op("@>")(wanted)


def fts_candidates(search: str) -> ColumnElement[bool]:
    """``jobs.id IN`` the FTS5 candidates of a name search (SQLite)."""
    return jobs.c.id.in_(
        select(literal_column("rowid")).select_from(text(NAME_SEARCH_FTS)).where(_fts_match(search))
    )


def _range_apart_from(q: HistoryQuery, key: str) -> bool:
    """A created or updated range, ordered by anything else: times, ids and often names (with a
    date in them) grow together, so the range's rows sit together along the ordering's index."""
    created = q.created_after is not None or q.created_before is not None
    updated = q.updated_after is not None or q.updated_before is not None
    return (created and key != "created_at") or (updated and key != "updated_at")


def _walk_rows(
    conn: Any, where: list[ColumnElement[bool]], order: list[Any], limit: int, offset: int = 0
) -> list[RowMapping]:
    """A page walked in two steps (PostgreSQL): the ids in order, then their rows. The first step
    reads only the ordering's index where it covers the filters (a name search ordered by name
    tests each name in the index instead of fetching every row it passes: ~10x at 1M jobs); the
    rows are then put in the ids' order (the transaction may have sorting ruled out)."""
    query = select(jobs.c.id).where(*where).order_by(*order).limit(limit)
    if offset:
        query = query.offset(offset)
    ids = list(conn.execute(query).scalars())
    if not ids:
        return []
    by_id = {row["id"]: row for row in JobRepository.fetch_rows(conn, [jobs.c.id.in_(ids)])}
    return [by_id[i] for i in ids if i in by_id]


def _sort_value(row: RowMapping, key: str) -> Any:
    if key == "duration":
        value = row["elapsed_time_ms"]
        return -1 if value is None else value
    return row[key]


def _ties_then_beyond(
    conn: Any,
    where: list[ColumnElement[bool]],
    column: Any,
    value: Any,
    last_id: int,
    smaller: bool,
    order: list[Any],
    limit: int,
) -> list[RowMapping]:
    """A keyset page in two index ranges, for SQLite: the rest of the cursor's run of equal values
    (``column = value AND id beyond``), then the values beyond it. SQLite turns a row-value
    comparison into a range on its first column only, so deep inside a long run of one value (a
    status: 80 % of the rows are SUCCESS) it read the run from its start (~60 ms at 100k jobs)."""
    beyond_id = jobs.c.id < last_id if smaller else jobs.c.id > last_id
    rows = JobRepository.fetch_rows(conn, [*where, column == value, beyond_id], order, limit)
    if len(rows) < limit:
        beyond = column < value if smaller else column > value
        rows += JobRepository.fetch_rows(conn, [*where, beyond], order, limit - len(rows))
    return rows


def _keyset(column: Any, value: Any, last_id: int, smaller: bool) -> ColumnElement[bool]:
    """A row-value comparison on (column, id), plus the same bound on the column alone: SQLite
    does not turn a row value over an expression index (duration) into a range, and walked it
    from the start to the cursor (~0.5 s at 90 % of 100k jobs); ``column <= value`` it does."""
    if smaller:
        return and_(column <= value, tuple_(column, jobs.c.id) < tuple_(value, last_id))
    return and_(column >= value, tuple_(column, jobs.c.id) > tuple_(value, last_id))
