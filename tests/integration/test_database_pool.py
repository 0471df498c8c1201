"""PostgreSQL's pool without ``pool_pre_ping``: a connection idle for a while is pinged before
use, so a server-side drop (restart, idle timeout) never reaches a request; one used a moment
ago is not; and a read of one statement runs without a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import NullPool, create_engine, event, text

from conveyor.store import engine as engine_module
from conveyor.store.database import Database
from tests.helpers.backends import postgres_database

IDLE, IN_TRANSACTION = psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS


@pytest.fixture
def database() -> Iterator[Database]:
    with postgres_database() as url:
        db = Database(url, pool_size=1)
        yield db
        db.dispose()


def backend_pid(db: Database) -> int:
    with db.read_one() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def transaction_status(conn: Any) -> Any:
    return conn.connection.dbapi_connection.info.transaction_status


def test_an_idle_connection_dropped_by_the_server_is_replaced_before_use(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(database)
    outside = create_engine(database.url, poolclass=NullPool)  # not from the pool under test
    with outside.connect() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    outside.dispose()
    monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)  # the pooled one counts as idle
    assert backend_pid(database) != first  # pinged, found dead, replaced: no error reached the read


def test_a_recently_used_connection_is_not_pinged(database: Database) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    backend_pid(database)
    event.listen(database.engine, "before_cursor_execute", record)
    try:
        backend_pid(database)
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    assert statements == ["SELECT pg_backend_pid()"]


def test_a_one_statement_read_runs_outside_a_transaction(database: Database) -> None:
    with database.read_one() as conn:
        conn.execute(text("SELECT 1"))
        assert transaction_status(conn) == IDLE  # autocommit: no BEGIN was sent
    with database.read() as conn:  # a read of several statements keeps its snapshot
        conn.execute(text("SELECT 1"))
        assert transaction_status(conn) == IN_TRANSACTION
    with database.write() as conn:
        conn.execute(text("SELECT 1"))
        assert transaction_status(conn) == IN_TRANSACTION  # autocommit did not leak back to the pool
