"""Alembic migrations: from empty to head and back on every backend, and no drift from the tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from conveyor.store import migrate
from conveyor.store.tables import metadata
from tests.backends import postgres_database

HEAD = "0002"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        with postgres_database() as pg_url:
            yield pg_url


def test_upgrade_downgrade_upgrade(url: str) -> None:
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    engine = create_engine(url)
    try:
        assert {"jobs", "items", "chunks", "job_logs", "job_events", "api_keys", "item_artifacts"} <= set(
            inspect(engine).get_table_names()
        )
        migrate.downgrade(url, "0001")  # one step down: the artifacts table goes, the rest stays
        assert migrate.current(url) == "0001"
        assert "item_artifacts" not in inspect(engine).get_table_names()
        assert "items" in inspect(engine).get_table_names()
        migrate.downgrade(url, "base")
        assert migrate.current(url) is None
        assert "jobs" not in inspect(engine).get_table_names()
        migrate.upgrade(url)
        assert migrate.current(url) == HEAD
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_table_definitions(url: str) -> None:
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    # Expression indexes cannot be reflected on every dialect; everything else must match exactly.
    relevant = [d for d in diff if not (d[0] in ("add_index", "remove_index") and "duration" in d[1].name)]
    assert relevant == []
