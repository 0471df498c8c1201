"""short name searches from an index (PostgreSQL: the 1- and 2-character grams of jobs.name);
history ordered by id from an index (both)

pg_trgm serves a substring search of three characters or more; a search of one or two characters
yields no trigram, so ``ILIKE '%qz%'`` read every name through the trigram index and then the
table (about 1.1 s at a million jobs, for the bounded count alone). This adds
``conveyor_name_grams(text)``, the distinct substrings of length 1 and 2 of ``lower(name)``, and a
GIN index over it: ``conveyor_name_grams(name) @> ARRAY[lower(search)]`` holds exactly when the
lowered name contains the lowered search, which is how PostgreSQL's ``ILIKE`` compares in a
multi-byte encoding. History narrows short searches to those candidates and still applies the
match itself, so results do not change. PostgreSQL only (SQLite scans ~100k names in a few ms).

Both dialects: ``ix_jobs_account_id`` (account_id, id). History ordered by ``id`` within an
account had no index in that order on SQLite, which sorted the whole account's jobs for a page
(65-430 ms at 100k jobs).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTION = "conveyor_name_grams"
INDEX = "ix_jobs_name_grams"
ID_INDEX = "ix_jobs_account_id"

# IMMUTABLE (lower() is): required of an index expression. STRICT: a NULL name has no grams.
CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT gram), '{{}}'::text[]) FROM (
    SELECT substr(lower(value), i, n) AS gram
    FROM generate_series(1, 2) AS n, generate_series(1, length(value) - n + 1) AS i
  ) grams
$$
"""


def upgrade() -> None:
    op.create_index(ID_INDEX, "jobs", ["account_id", "id"], unique=False)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CREATE_FUNCTION)
    op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON jobs USING gin ({FUNCTION}(name))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(text)")
    op.drop_index(ID_INDEX, table_name="jobs")
