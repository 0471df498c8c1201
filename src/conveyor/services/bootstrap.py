"""Bringing a database to life: schema migrations, registered pipelines, the default tenant."""

from __future__ import annotations

from conveyor.pipelines import registry
from conveyor.pipelines.base import Pipeline
from conveyor.pipelines.export import DataExport
from conveyor.store import Store, migrate


def prepare(store: Store) -> None:
    """Migrate to head, mirror the installed pipelines (and the built-in data export), ensure the
    default account and project."""
    migrate.upgrade(store.db.url)
    pipelines: list[type[Pipeline]] = [*registry.available().values(), DataExport]
    store.pipelines.sync([cls.describe() for cls in pipelines])
    store.auth.ensure_defaults()
    store.db.optimize()
