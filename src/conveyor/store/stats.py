"""Cluster-wide figures for ``/metrics``, read from the shared database (so they hold in every mode)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from conveyor.domain.status import ChunkStatus
from conveyor.store.database import Database
from conveyor.store.tables import chunks, jobs, pipelines


@dataclass(frozen=True)
class FinishedChunk:
    id: int
    pipeline: str
    seconds: float


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def jobs_by_status(self) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {status: int(count) for status, count in rows}

    def items_by_pipeline(self) -> dict[str, tuple[int, int]]:
        """pipeline slug -> (completed, failed) items over the jobs in the history."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(pipelines.c.slug, func.sum(jobs.c.completed), func.sum(jobs.c.failed))
                .select_from(jobs.join(pipelines, pipelines.c.id == jobs.c.pipeline_id))
                .group_by(pipelines.c.slug)
            ).all()
        return {slug: (int(done or 0), int(failed or 0)) for slug, done, failed in rows}

    def chunks_by_state(self) -> dict[str, int]:
        """Open chunks: QUEUED (the queue depth), BLOCKED (behind a delay stage) and LEASED (running)."""
        open_states = [ChunkStatus.QUEUED.value, ChunkStatus.BLOCKED.value, ChunkStatus.LEASED.value]
        with self.db.read() as conn:
            rows = conn.execute(
                select(chunks.c.status, func.count())
                .where(chunks.c.status.in_(open_states))
                .group_by(chunks.c.status)
            ).all()
        found = {status: int(count) for status, count in rows}
        return {state: found.get(state, 0) for state in open_states}

    def busy_workers(self) -> int:
        """Distinct lease holders right now (local processes and Celery workers alike)."""
        with self.db.read() as conn:
            count = conn.execute(
                select(func.count(func.distinct(chunks.c.leased_by))).where(
                    chunks.c.status == ChunkStatus.LEASED.value
                )
            ).scalar()
        return int(count or 0)

    def chunks_finished_since(self, since: datetime, limit: int = 10_000) -> list[FinishedChunk]:
        """Chunks done at or after ``since``: id, pipeline, seconds from queued to done."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(chunks.c.id, pipelines.c.slug, chunks.c.created_at, chunks.c.finished_at)
                .select_from(
                    chunks.join(jobs, jobs.c.id == chunks.c.job_id).outerjoin(
                        pipelines, pipelines.c.id == jobs.c.pipeline_id
                    )
                )
                .where(chunks.c.finished_at >= since, chunks.c.status == ChunkStatus.DONE.value)
                .order_by(chunks.c.finished_at)
                .limit(limit)
            ).all()
        return [
            FinishedChunk(int(i), slug or "", max(0.0, (done - created).total_seconds()))
            for i, slug, created, done in rows
        ]
