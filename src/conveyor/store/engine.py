"""Engine creation with the per-dialect settings Conveyor relies on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc

# A pooled PostgreSQL connection idle for longer than this is pinged before use (a restarted
# server or a dropped idle connection is replaced, not handed to a request); one used more
# recently is trusted. ``pool_pre_ping`` pinged on every checkout: a round trip (two, with the
# ping's own BEGIN) on every status read, the read path's largest cost after the query itself.
IDLE_PING_SECONDS = 5.0


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return _postgres_engine(url, pool_size=pool_size)


def _postgres_engine(url: str, *, pool_size: int) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=10, future=True)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return  # just connected, or used a moment ago
        try:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_conn.rollback()
        except Exception as error:  # the pool replaces the connection and tries again
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error

    return engine


def _sqlite_engine(url: str) -> Engine:
    # WAL lets readers run beside the single writer; connections are pooled per process.
    engine = create_engine(
        url, pool_size=5, max_overflow=20, connect_args={"timeout": 30, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that we can BEGIN IMMEDIATE for writes.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write transaction takes the write lock up front: a deferred one that reads and then
        # writes can fail with SQLITE_BUSY instead of waiting for the lock.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: the SQLite write lock is taken at BEGIN."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def read_statement(engine: Engine) -> Iterator[Connection]:
    """For a read of ONE statement (its own consistent snapshot): on PostgreSQL in autocommit,
    which saves the BEGIN and COMMIT round trips of a transaction (with the old ping and the
    separate logs query a status read made seven; now one).
    SQLite's BEGIN costs no round trip: there it is ``read_tx``."""
    if engine.dialect.name == "sqlite":
        with read_tx(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")
