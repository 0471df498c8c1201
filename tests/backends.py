"""Real backing services for the contract suite. Under CI=true a missing service is a failure."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

POSTGRES_HOST = os.environ.get("CONVEYOR_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CONVEYOR_TEST_PG_PORT", "5432"))
POSTGRES_USER = os.environ.get("CONVEYOR_TEST_PG_USER", "postgres")


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
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test; dropped afterwards."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    import psycopg

    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    admin = f"host={POSTGRES_HOST} port={POSTGRES_PORT} user={POSTGRES_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
