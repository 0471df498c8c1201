"""Row counts for history pages that never scan a long history on every request.

Up to ``exact_limit`` matching rows a count is exact, and cheap: it stops reading the index at
``exact_limit + 1`` rows. Beyond that the count is marked as an estimate:

- PostgreSQL: the planner's row estimate for the same query (``EXPLAIN``), from the statistics
  autovacuum keeps; no rows are read.
- SQLite (no usable estimates): one exact count, then cached for ``cache_seconds`` per filter, so
  paging through a long history counts at most once per period.

A page says which one it got (``count_exact``), and the estimate never goes below ``exact_limit + 1``:
a client can tell "at least this many" from an exact figure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from conveyor.store.tables import jobs


class Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <select>`` with the select's parameters bound as usual."""

    inherit_cache = False

    def __init__(self, query: Select[Any]) -> None:
        self.query = query


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.query, **kw)


@dataclass(frozen=True)
class Count:
    value: int
    exact: bool
    # With ``want_ids`` and an exact count: the matching ids (the count read them anyway).
    ids: list[int] | None = None


# An estimate this many times the exact limit is "many" without counting (estimate_first).
ESTIMATE_TRUSTED = 5


class JobCounter:
    def __init__(self, dialect: str, *, exact_limit: int, cache_seconds: float) -> None:
        self.dialect = dialect
        self.exact_limit = exact_limit
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def count(
        self,
        conn: Connection,
        where: list[ColumnElement[bool]],
        *,
        hint: Sequence[ColumnElement[bool]] = (),
        estimate_first: bool = False,
        want_ids: bool = False,
    ) -> Count:
        """Exact up to ``exact_limit``; above it PostgreSQL's estimate (of ``where`` with ``hint``:
        clauses implied by it whose statistics are better) or SQLite's cached exact count. With
        ``estimate_first`` (PostgreSQL), an estimate far above the limit is taken without counting:
        for a name search, finding ``exact_limit`` matches is itself a walk past every name that
        does not match (~100 ms at a million jobs for a common word). With ``want_ids`` an exact
        count also carries the ids it counted (the caller's first page needs no second scan)."""
        if estimate_first and self.dialect == "postgresql":
            estimated = self.estimate(conn, [*where, *hint])
            if estimated > ESTIMATE_TRUSTED * self.exact_limit:
                return Count(estimated, False)
        if want_ids:
            found = list(conn.execute(select(jobs.c.id).where(*where).limit(self.exact_limit + 1)).scalars())
            if len(found) <= self.exact_limit:
                return Count(len(found), True, found)
            seen = len(found)
        else:
            bounded: Select[Any] = (
                select(literal_column("1")).select_from(jobs).where(*where).limit(self.exact_limit + 1)
            )
            seen = conn.execute(select(func.count()).select_from(bounded.subquery())).scalar_one()
        if seen <= self.exact_limit:
            return Count(seen, True)
        if self.dialect == "postgresql":
            return Count(max(self.exact_limit + 1, self.estimate(conn, [*where, *hint])), False)
        return Count(self._cached_exact(conn, where), False)

    def estimate(self, conn: Connection, where: list[ColumnElement[bool]]) -> int:
        """PostgreSQL's planner estimate of the rows matching ``where`` (no rows are read)."""
        plan = conn.execute(Explain(select(jobs.c.id).where(*where))).scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def _cached_exact(self, conn: Connection, where: list[ColumnElement[bool]]) -> int:
        query = select(func.count()).select_from(jobs).where(*where)
        compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
        key = str(compiled) + "\x00" + repr(sorted(compiled.params.items(), key=_by_name))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        value = int(conn.execute(query).scalar_one())
        with self._lock:
            if len(self._cache) > 1000:  # many distinct filters: start over rather than grow
                self._cache.clear()
            self._cache[key] = (now, value)
        return value


def _by_name(item: tuple[str, Any]) -> str:
    return item[0]
