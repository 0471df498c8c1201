"""One-row reads run on the pooled driver connection, for the hottest read (a job's status).

A job detail selects ~57 columns. Through ``Connection.execute`` each read pays SQLAlchemy's
execution context and result set-up on top of the query, and psycopg builds one ``Column``
description object per column because the result set-up asks for ``cursor.description``:
together more CPU than the query itself. ``OneRowRead`` compiles its select once per dialect and
runs it on the pool's driver connection (checked out through the pool, so its checkout events,
such as the idle ping in engine.py, still run), applies each column type's own result processor
and returns a plain dict keyed like the ``RowMapping`` the same select gives through SQLAlchemy
(tests/integration/test_store_contract.py checks both agree on every column, on both backends).

One statement is its own snapshot: on SQLite (pysqlite's implicit transactions are off, see
engine.py) a lone SELECT runs in autocommit; on PostgreSQL the connection is put in autocommit
for the statement and back before it returns to the pool, so the read costs one round trip.
Selects with expanding ``IN`` parameters are not supported (their SQL depends on the values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, exc
from sqlalchemy.sql import Select

Processor = Callable[[Any], Any] | None


class OneRowRead:
    """``statement`` compiled for ``engine``'s dialect; ``fetch`` runs it and returns its first
    row as a dict (None without rows)."""

    def __init__(self, statement: Select[Any], engine: Engine) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.has_out_parameters or any(b.expanding for b in compiled.binds.values()):
            raise ValueError("OneRowRead: expanding or OUT parameters are not supported")
        self.engine = engine
        self.sqlite = dialect.name == "sqlite"
        self.sql = str(compiled)
        self._compiled = compiled
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        self._bind: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._bind[name] = process
        self._types = [column.type.dialect_impl(dialect) for column in statement.selected_columns]
        self.keys: tuple[str, ...] = tuple(statement.selected_columns.keys())
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("OneRowRead: the select's column keys must be unique")
        # Some processors depend on the driver's type code of the column (PostgreSQL's numerics):
        # made from the first result's description, as SQLAlchemy does, and kept.
        self._processors: list[tuple[int, Callable[[Any], Any]]] | None = None

    def _make_processors(self, description: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        dialect = self.engine.dialect
        out: list[tuple[int, Callable[[Any], Any]]] = []
        for index, (type_, column) in enumerate(zip(self._types, description, strict=True)):
            process = type_.result_processor(dialect, column[1])
            if process is not None:
                out.append((index, process))
        return out

    def _parameters(self, values: Mapping[str, Any]) -> Any:
        params = self._compiled.construct_params(dict(values))
        for name, process in self._bind.items():
            params[name] = process(params[name])
        if self._order is not None:
            return tuple(params[name] for name in self._order)
        return params

    def fetch(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        params = self._parameters(values)
        pooled = self.engine.raw_connection()
        driver: Any = pooled.driver_connection
        cursor = None
        try:
            if self.sqlite:
                cursor = driver.execute(self.sql, params)
                row = cursor.fetchone()
                cursor.close()  # (a pysqlite cursor costs little, and a closed one holds no snapshot)
            else:
                cursor = _cursor(pooled.info, driver)
                driver.autocommit = True  # no BEGIN/COMMIT round trips (no I/O to switch)
                try:
                    cursor.execute(self.sql, params)
                    row = cursor.fetchone()
                finally:
                    driver.autocommit = False
            if self._processors is None:
                self._processors = self._make_processors(cursor.description)
        except self.engine.dialect.loaded_dbapi.Error as error:
            invalidated = self.engine.dialect.is_disconnect(error, pooled, cursor)
            pooled.info.pop(_CURSOR, None)
            if invalidated:
                pooled.invalidate(error)
            raise exc.DBAPIError.instance(
                self.sql,
                params,
                error,
                self.engine.dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=self.engine.dialect,
            ) from error
        finally:
            pooled.close()  # back to the pool (its reset-on-return is a no-op: no transaction)
        if row is None:
            return None
        values_out = list(row)
        for index, process in self._processors or ():
            values_out[index] = process(values_out[index])
        return dict(zip(self.keys, values_out, strict=True))


_CURSOR = "conveyor_read_cursor"


def _cursor(info: dict[Any, Any], driver: Any) -> Any:
    """The psycopg connection's cursor for these reads, made once per connection and kept in the
    pool record's ``info``: a new cursor per read cost a tenth of the read."""
    kept = info.get(_CURSOR)
    if kept is None or kept[0] is not driver:
        kept = info[_CURSOR] = (driver, driver.cursor())
    return kept[1]
