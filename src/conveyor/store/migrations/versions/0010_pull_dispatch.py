"""Antenna's pull protocol (async_api): per-item task leases, pull services and their pipelines.

Items get three nullable columns (no table rewrite at any size): the reply subject of the item's
current delivery, when that delivery's lease runs out, and how many times it was delivered. An
index on (job_id, lease_expires_at) finds the expired deliveries of a job without reading its
other items. ``jobs.dispatch_mode`` already exists; async_api is a new value of it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conveyor.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("items", sa.Column("reply_subject", sa.String(64), nullable=True))
    op.add_column(
        "items", sa.Column("lease_expires_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True)
    )
    op.add_column("items", sa.Column("deliveries", sa.Integer(), nullable=True))
    op.create_index("ix_items_job_lease", "items", ["job_id", "lease_expires_at"])
    op.create_table(
        "pull_services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("registered_by", sa.String(32), nullable=True),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_services")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_pull_services_project_id_name")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_pull_services_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_pull_services_project_id_projects"),
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "pull_pipelines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(150), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("info", JSON, nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_pipelines")),
        sa.UniqueConstraint("project_id", "slug", name=op.f("uq_pull_pipelines_project_id_slug")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_pull_pipelines_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["pull_services.id"],
            name=op.f("fk_pull_pipelines_service_id_pull_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_pull_pipelines_pipeline_id_pipelines")
        ),
    )


def downgrade() -> None:
    op.drop_table("pull_pipelines")
    op.drop_table("pull_services")
    op.drop_index("ix_items_job_lease", table_name="items")
    for column in ("deliveries", "lease_expires_at", "reply_subject"):
        op.drop_column("items", column)
