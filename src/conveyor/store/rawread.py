"""One-row reads run on the pooled driver connection, for the hottest read (a job's status).

A job detail selects ~57 columns. Through ``Connection.execute`` each read pays SQLAlchemy's
execution context and result set-up on top of the query, and psycopg builds one ``Column``
description object per column because the result set-up asks for ``cursor.description``:
together more CPU than the query itself. ``OneRowRead`` compiles its select once per dialect and
runs it on the pool's driver connection (checked out through the pool, so its checkout events,
such as the idle ping in engine.py, still run), applies each column type's own result processor
and returns a plain dict keyed like the ``RowMapping`` the same select gives through SQLAlchemy
(tests/unit/test_rawread.py checks both agree on every column, on SQLite and PostgreSQL).

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
        driver = pooled.driver_connection
        cursor = None
        try:
            if self.sqlite:
                cursor = driver.execute(self.sql, params)  # type: ignore[union-attr]
                row = cursor.fetchone()
                if self._processors is None:
                    self._processors = self._make_processors(cursor.description)
            else:
                driver.autocommit = True  # type: ignore[union-attr]
                try:
                    cursor = driver.cursor()  # type: ignore[union-attr]
                    cursor.execute(self.sql, params)
                    row = cursor.fetchone()
                    if self._processors is None:
                        self._processors = self._make_processors(cursor.description)
                finally:
                    driver.autocommit = False  # type: ignore[union-attr]
        except self.engine.dialect.loaded_dbapi.Error as error:
            invalidated = self.engine.dialect.is_disconnect(error, pooled, cursor)
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
            if cursor is not None:
                cursor.close()
            pooled.close()  # back to the pool (its reset-on-return is a no-op: no transaction)
        if row is None:
            return None
        values_out = list(row)
        for index, process in self._processors or ():
            values_out[index] = process(values_out[index])
        return dict(zip(self.keys, values_out, strict=True))
