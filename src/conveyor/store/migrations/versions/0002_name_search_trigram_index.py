"""name search index (PostgreSQL: pg_trgm GIN over jobs.name)

History's ``search`` is a substring match (``ILIKE '%text%'``), which no B-tree serves: at a
million jobs a rare word scanned the whole table (≈1 s). A trigram GIN index answers it from
the index. PostgreSQL only; SQLite keeps the scan. ``CREATE EXTENSION pg_trgm`` needs a role
allowed to create it (pg_trgm is a "trusted" extension since PostgreSQL 13: the database owner
may); without it the migration logs a warning and skips the index, and search still works.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:45:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
INDEX = "ix_jobs_name_trgm"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm is not available (%s); name search will scan. Skipping %s.", exc.orig, INDEX)
        return
    op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON jobs USING gin (name gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
