"""Bringing a database to life: schema migrations, registered pipelines, the default tenant."""

from __future__ import annotations

from conveyor.pipelines import registry
from conveyor.store import Store, migrate


def prepare(store: Store) -> None:
    """Migrate to head, mirror the installed pipelines, ensure the default account and project."""
    migrate.upgrade(store.db.url)
    store.pipelines.sync([cls.describe() for cls in registry.available().values()])
    store.auth.ensure_defaults()
    store.db.optimize()
