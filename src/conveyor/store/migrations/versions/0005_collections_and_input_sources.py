"""collections, item sources, job sources

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conveyor.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_collections_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_collections_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
    )
    op.create_index(
        "ix_collections_account_project", "collections", ["account_id", "project_id", "id"], unique=False
    )
    op.create_table(
        "collection_items",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_collection_items_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_items")),
    )
    op.create_index(
        "ix_collection_items_collection_id", "collection_items", ["collection_id", "id"], unique=False
    )
    # Plain ADD COLUMN (SQLite has it): batch mode would rebuild `jobs` and lose the indexes it
    # cannot reflect (the expression index on duration, the partial index of active jobs).
    op.add_column("items", sa.Column("source", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("source_collection_id", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("source_collection", JSON, nullable=True))
    op.add_column("jobs", sa.Column("source_item", JSON, nullable=True))
    op.create_index("ix_jobs_source_collection", "jobs", ["source_collection_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_source_collection", table_name="jobs")
    # SQLite >= 3.35 drops columns natively; batch mode would rebuild the tables (see upgrade).
    for table, column in (
        ("jobs", "source_item"),
        ("jobs", "source_collection"),
        ("jobs", "source_collection_id"),
        ("items", "source"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_index("ix_collection_items_collection_id", table_name="collection_items")
    op.drop_table("collection_items")
    op.drop_index("ix_collections_account_project", table_name="collections")
    op.drop_table("collections")
