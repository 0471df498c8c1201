"""indexes for the live event stream and /metrics

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:40:00.000000

The event hub (``conveyor.events``) asks, four times a second, which jobs of any account changed
in the last few seconds; this index answers that without scanning the jobs table. ``/metrics`` likewise reads the chunks
finished since its previous scrape (for the chunk latency histogram).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"], unique=False)
    op.create_index("ix_chunks_finished_at", "chunks", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chunks_finished_at", table_name="chunks")
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
