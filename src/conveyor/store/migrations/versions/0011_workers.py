"""The worker registry: one row per worker that reports itself (local, Celery, HTTP, pull).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.store.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("pipelines", conveyor.store.types.JSONType, nullable=False),
        sa.Column("info", conveyor.store.types.JSONType, nullable=False),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("current_job_id", BigId, nullable=True),
        sa.Column("items_done", sa.BigInteger(), nullable=False),
        sa.Column("stopped_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_workers_account_id_accounts"), ondelete="CASCADE"
        ),
    )
    deployment = sa.text("account_id IS NULL")
    account = sa.text("account_id IS NOT NULL")
    op.create_index(
        "uq_workers_deployment_kind_name",
        "workers",
        ["kind", "name"],
        unique=True,
        sqlite_where=deployment,
        postgresql_where=deployment,
    )
    op.create_index(
        "uq_workers_account_kind_name",
        "workers",
        ["account_id", "kind", "name"],
        unique=True,
        sqlite_where=account,
        postgresql_where=account,
    )


def downgrade() -> None:
    op.drop_index("uq_workers_account_kind_name", table_name="workers")
    op.drop_index("uq_workers_deployment_kind_name", table_name="workers")
    op.drop_table("workers")
