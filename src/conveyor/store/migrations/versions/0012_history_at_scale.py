"""history at scale: name search from an index on SQLite (FTS5 trigram), the key filter indexed

- SQLite: ``jobs_name_fts``, an FTS5 table with the trigram tokenizer over ``jobs.name``
  (external content: it stores only the index, the names stay in ``jobs``), kept in step by
  triggers on insert, delete and rename of a job, and filled from the existing jobs here. History's
  substring search narrows to its candidates instead of scanning every name (at 100k jobs a rare
  word took ~55 ms, a scan). The candidates are a superset (Unicode case folding): the store still
  applies the ``LIKE``, so results do not change. Without FTS5 in the SQLite library the table is
  skipped with a warning and search scans as before.
- Both: ``ix_jobs_account_submitted_created`` for the key filter (native ``submitted_by``, Modzy
  ``accessKey`` and ``user``): a key with few jobs was a scan of the account's history.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:45:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
FTS = "jobs_name_fts"
SUBMITTED_INDEX = "ix_jobs_account_submitted_created"

# Kept in step with jobs by triggers, so every path that writes a job (the store, a bulk insert, a
# cascade) updates the index; an external-content FTS5 table is told what it indexed to forget it.
SQLITE_FTS = [
    f"CREATE VIRTUAL TABLE {FTS} USING fts5("
    "name, content='jobs', content_rowid='id', tokenize='trigram case_sensitive 0')",
    f"CREATE TRIGGER {FTS}_insert AFTER INSERT ON jobs BEGIN "
    f"INSERT INTO {FTS}(rowid, name) VALUES (new.id, new.name); END",
    f"CREATE TRIGGER {FTS}_delete AFTER DELETE ON jobs BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, name) VALUES ('delete', old.id, old.name); END",
    f"CREATE TRIGGER {FTS}_rename AFTER UPDATE OF name ON jobs BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, name) VALUES ('delete', old.id, old.name); "
    f"INSERT INTO {FTS}(rowid, name) VALUES (new.id, new.name); END",
    f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')",
]


def upgrade() -> None:
    op.create_index(SUBMITTED_INDEX, "jobs", ["account_id", "submitted_by", "created_at", "id"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(f"CREATE VIRTUAL TABLE temp.{FTS}_probe USING fts5(x, tokenize='trigram')")
            bind.exec_driver_sql(f"DROP TABLE temp.{FTS}_probe")
    except sa.exc.DBAPIError as exc:
        log.warning("SQLite has no FTS5 trigram tokenizer (%s); name search will scan.", exc.orig)
        return
    for statement in SQLITE_FTS:
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "rename"):
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FTS}_{trigger}")
        bind.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS}")
    op.drop_index(SUBMITTED_INDEX, table_name="jobs")
