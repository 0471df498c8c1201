"""Inputs by reference: items and collection items keep a ref (and sha256) instead of bytes;
jobs get a collect plan, an output sink, a blob prefix and encrypted per-job credentials;
output_shards records each written result shard.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("items", sa.Column("ref", sa.Text(), nullable=True))
    op.add_column("items", sa.Column("sha256", sa.String(64), nullable=True))
    op.add_column("collection_items", sa.Column("ref", sa.Text(), nullable=True))
    op.add_column("collection_items", sa.Column("sha256", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("collect", conveyor.store.types.JSONType, nullable=True))
    op.add_column("jobs", sa.Column("output", conveyor.store.types.JSONType, nullable=True))
    op.add_column("jobs", sa.Column("blob_prefix", sa.String(200), nullable=True))
    op.add_column("jobs", sa.Column("secret", sa.Text(), nullable=True))
    op.create_table(
        "output_shards",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("chunk_id", BigId, nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("written_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_output_shards")),
        sa.UniqueConstraint("job_id", "name", name=op.f("uq_output_shards_job_id_name")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_output_shards_job_id_jobs"), ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("output_shards")
    for column in ("secret", "blob_prefix", "output", "collect"):
        op.drop_column("jobs", column)
    for table in ("collection_items", "items"):
        op.drop_column(table, "sha256")
        op.drop_column(table, "ref")
