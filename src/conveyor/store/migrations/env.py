"""Alembic environment: the URL comes from the Config (set by conveyor.store.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from conveyor.store.tables import metadata

config = context.config
_configured = config.get_main_option("sqlalchemy.url")
assert _configured, "sqlalchemy.url must be set"
url: str = _configured


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
