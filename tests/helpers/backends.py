"""Real backing services for the suites, and rows read straight from a deployment's database.

Under CI=true a missing service is a failure (``require_service``), locally a skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import testing
from conveyor.services.bootstrap import prepare
from conveyor.settings import Settings
from conveyor.store import Store

POSTGRES_HOST = os.environ.get("CONVEYOR_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CONVEYOR_TEST_PG_PORT", "5432"))
POSTGRES_USER = os.environ.get("CONVEYOR_TEST_PG_USER", "postgres")
POSTGRES_ADMIN_URL = f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"


def require_service(name: str, host: str, port: int) -> None:
    """Fail (CI) or skip (local) with the service's name when it does not answer."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc}); start it to run these tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def dialect_store(
    dialect: str, data_dir: Path, *, pool_size: int | None = None, **settings: Any
) -> Iterator[Store]:
    """A migrated Store on a fresh database of ``dialect`` (``sqlite`` under ``data_dir``, or a
    fresh PostgreSQL database), closed (and the database dropped) afterwards: the store-level
    suites run the same tests on both."""

    def build(url: str) -> Store:
        made = Store(
            Settings(data_dir=data_dir, database_url=url, **settings),
            **({"pool_size": pool_size} if pool_size else {}),
        )
        prepare(made)
        return made

    if dialect == "sqlite":
        made = build(f"sqlite:///{data_dir / 'store.db'}")
        try:
            yield made
        finally:
            made.close()
        return
    with postgres_database() as url:
        made = build(url)
        try:
            yield made
        finally:
            made.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (``conveyor.testing.postgres_database`` on the
    test server); dropped afterwards."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    with testing.postgres_database(POSTGRES_ADMIN_URL) as url:
        yield url


def item_rows(engine: sa.Engine, job_id: int) -> list[tuple[int, str, int]]:
    """(seq, status, attempts) of a job's items, read straight from the database."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, status, attempts FROM items WHERE job_id = :j ORDER BY seq"), {"j": job_id}
        )
        return [(r[0], r[1], r[2]) for r in rows]


def chunk_rows(engine: sa.Engine, job_id: int) -> list[tuple[int, str, str, int, str | None]]:
    """(id, kind, status, attempts, leased_by) of a job's chunks."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, kind, status, attempts, leased_by FROM chunks WHERE job_id = :j ORDER BY id"),
            {"j": job_id},
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
