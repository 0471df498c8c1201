"""item artifacts: per-item thumbnails (samples) and explanations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_artifacts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_item_artifacts_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_item_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_artifacts")),
        sa.UniqueConstraint("item_id", "kind", name=op.f("uq_item_artifacts_item_id_kind")),
    )
    with op.batch_alter_table("item_artifacts", schema=None) as batch_op:
        batch_op.create_index("ix_item_artifacts_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("item_artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_item_artifacts_job_id")
    op.drop_table("item_artifacts")
