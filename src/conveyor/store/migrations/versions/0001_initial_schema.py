"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:19:44.045541
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conveyor.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("slug", name=op.f("uq_accounts_slug")),
    )
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("version_name", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "input_kinds",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "stages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("image_classification_model", sa.Boolean(), nullable=False),
        sa.Column("supports_explain", sa.Boolean(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("slug", "version", name=op.f("uq_pipelines_slug_version")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_projects_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("account_id", "slug", name=op.f("uq_projects_account_id_slug")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_api_keys_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "jobs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=True),
        sa.Column("job_type", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dispatch_mode", sa.String(length=20), nullable=False),
        sa.Column("delay", sa.Float(), nullable=False),
        sa.Column("limit", sa.Integer(), nullable=True),
        sa.Column("shuffle", sa.Boolean(), nullable=False),
        sa.Column("timeout_ms", sa.BigInteger(), nullable=True),
        sa.Column("explain", sa.Boolean(), nullable=False),
        sa.Column("max_failed_ratio", sa.Float(), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "input_summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("canceled", sa.Integer(), nullable=False),
        sa.Column("input_byte_amount", sa.BigInteger(), nullable=False),
        sa.Column("submitted_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("queue_time_ms", sa.BigInteger(), nullable=True),
        sa.Column("elapsed_time_ms", sa.BigInteger(), nullable=True),
        sa.Column("delay_progress", sa.Float(), nullable=False),
        sa.Column(
            "stage_params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_jobs_account_id_accounts")),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_jobs_pipeline_id_pipelines")
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_jobs_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("uuid", name=op.f("uq_jobs_uuid")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_account_created", ["account_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_account_name", ["account_id", "name", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_account_pipeline_created",
            ["account_id", "pipeline_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_jobs_account_project_created", ["account_id", "project_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_account_status_created", ["account_id", "status", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_account_status_id", ["account_id", "status", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_account_type_created", ["account_id", "job_type", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_account_updated", ["account_id", "updated_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_deadline", ["deadline_at"], unique=False)
        batch_op.create_index("ix_jobs_status_created", ["status", "created_at", "id"], unique=False)
    active = sa.text("status IN ('CANCELING', 'CREATED', 'PENDING', 'RETRY', 'STARTED')")
    op.create_index(
        "ix_jobs_account_active_created",
        "jobs",
        ["account_id", "created_at", "id"],
        unique=False,
        sqlite_where=active,
        postgresql_where=active,
    )
    op.create_index(
        "ix_jobs_account_duration",
        "jobs",
        ["account_id", sa.text("coalesce(elapsed_time_ms, -1)"), "id"],
        unique=False,
    )

    op.create_table(
        "chunks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("leased_by", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_chunks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chunks")),
    )
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.create_index("ix_chunks_job_status", ["job_id", "status"], unique=False)
        batch_op.create_index("ix_chunks_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_chunks_status_lease", ["status", "lease_expires_at"], unique=False)

    op.create_table(
        "items",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_items_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("job_id", "seq", name=op.f("uq_items_job_id_seq")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index("ix_items_job_status_seq", ["job_id", "status", "seq"], unique=False)

    op.create_table(
        "job_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index("ix_job_events_job_id", ["job_id", "id"], unique=False)

    op.create_table(
        "job_logs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_logs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_logs")),
    )
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.create_index("ix_job_logs_job_id", ["job_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_job_logs_job_id")

    op.drop_table("job_logs")
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_job_events_job_id")

    op.drop_table("job_events")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_job_status_seq")

    op.drop_table("items")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_chunks_status_lease")
        batch_op.drop_index("ix_chunks_status_id")
        batch_op.drop_index("ix_chunks_job_status")

    op.drop_table("chunks")
    op.drop_index("ix_jobs_account_duration", table_name="jobs")
    op.drop_index("ix_jobs_account_active_created", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_created")
        batch_op.drop_index("ix_jobs_deadline")
        batch_op.drop_index("ix_jobs_account_updated")
        batch_op.drop_index("ix_jobs_account_type_created")
        batch_op.drop_index("ix_jobs_account_status_id")
        batch_op.drop_index("ix_jobs_account_status_created")
        batch_op.drop_index("ix_jobs_account_project_created")
        batch_op.drop_index("ix_jobs_account_pipeline_created")
        batch_op.drop_index("ix_jobs_account_name")
        batch_op.drop_index("ix_jobs_account_created")

    op.drop_table("jobs")
    op.drop_table("api_keys")
    op.drop_table("projects")
    op.drop_table("pipelines")
    op.drop_table("accounts")
