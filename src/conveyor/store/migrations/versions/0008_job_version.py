"""jobs.version: bumped on every update of a job row (the API's ETags)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False))


def downgrade() -> None:
    op.drop_column("jobs", "version")  # native DROP COLUMN on SQLite >= 3.35 and PostgreSQL
