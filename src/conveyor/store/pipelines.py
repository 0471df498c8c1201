"""Pipeline rows: the registry's pipelines mirrored into the database so jobs can refer to them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import RowMapping, insert, select

from conveyor.clock import utcnow
from conveyor.errors import NotFound, UnknownPipeline
from conveyor.store.database import Database
from conveyor.store.tables import pipelines


class PipelineRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def sync(self, described: list[dict[str, Any]]) -> None:
        """Insert a row for every (slug, version) not yet known. Existing rows are history: kept."""
        with self.db.write() as conn:
            known = {(r.slug, r.version) for r in conn.execute(select(pipelines.c.slug, pipelines.c.version))}
            now = utcnow()
            for entry in described:
                if (entry["slug"], entry["version"]) not in known:
                    conn.execute(insert(pipelines).values(created_at=now, updated_at=now, **entry))

    def all(self) -> list[RowMapping]:
        with self.db.read() as conn:
            return list(
                conn.execute(select(pipelines).order_by(pipelines.c.slug, pipelines.c.version)).mappings()
            )

    def latest(self, slug: str) -> RowMapping:
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(pipelines)
                    .where(pipelines.c.slug == slug)
                    .order_by(pipelines.c.version.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise UnknownPipeline(f"Unknown pipeline {slug!r}.", pipeline=slug)
        return row

    def by_id(self, pipeline_id: int) -> RowMapping:
        with self.db.read() as conn:
            row = conn.execute(select(pipelines).where(pipelines.c.id == pipeline_id)).mappings().first()
        if row is None:
            raise NotFound(f"Pipeline {pipeline_id} not found.", pipeline_id=pipeline_id)
        return row
