"""The database handle shared by the repositories: engine, transactions, dialect facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from conveyor.store.engine import make_engine, read_statement, read_tx, write_tx


class Database:
    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with write_tx(self.engine) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with read_tx(self.engine) as conn:
            yield conn

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """A read of one statement: no transaction round trips on PostgreSQL (see ``read_statement``)."""
        with read_statement(self.engine) as conn:
            yield conn

    def optimize(self) -> None:
        """Refresh the query planner's statistics (SQLite has none until told; PostgreSQL autovacuums)."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as conn:
            # A bounded, approximate ANALYZE: fast even on millions of rows.
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")

    def dispose(self) -> None:
        self.engine.dispose()
