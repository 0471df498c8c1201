"""Artifact repository: the small per-item files workers write (samples, explanations)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from conveyor.domain.access import Scope
from conveyor.domain.artifacts import Artifact, ArtifactKind
from conveyor.errors import NotFound
from conveyor.store.database import Database
from conveyor.store.jobs import scope_clauses
from conveyor.store.tables import item_artifacts, items, jobs


@dataclass(frozen=True)
class StoredArtifact:
    item_id: int
    kind: ArtifactKind
    media_type: str
    data: bytes


def replace(conn: Connection, job_id: int, produced: Sequence[tuple[int, Artifact]], now: datetime) -> None:
    """Store (item id, artifact) pairs inside a write-back transaction; a re-run item's old ones go."""
    if not produced:
        return
    item_ids = sorted({item_id for item_id, _ in produced})
    conn.execute(delete(item_artifacts).where(item_artifacts.c.item_id.in_(item_ids)))
    conn.execute(
        insert(item_artifacts),
        [
            {
                "job_id": job_id,
                "item_id": item_id,
                "kind": artifact.kind.value,
                "media_type": artifact.media_type,
                "data": artifact.data,
                "created_at": now,
            }
            for item_id, artifact in produced
        ],
    )


class ArtifactRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, scope: Scope, job_id: int, item_id: int, kind: ArtifactKind) -> StoredArtifact:
        """The artifact, or NotFound naming what is missing: the job, the item or the artifact."""
        with self.db.read() as conn:
            if (
                conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, *scope_clauses(scope))).first()
                is None
            ):
                raise NotFound(f"Job {job_id} not found.", job_id=job_id)
            item = conn.execute(
                select(items.c.id, items.c.status).where(items.c.id == item_id, items.c.job_id == job_id)
            ).first()
            if item is None:
                raise NotFound(f"Item {item_id} not found in job {job_id}.", job_id=job_id, item_id=item_id)
            row = conn.execute(
                select(item_artifacts.c.media_type, item_artifacts.c.data).where(
                    item_artifacts.c.item_id == item_id, item_artifacts.c.kind == kind.value
                )
            ).first()
        if row is None:
            raise NotFound(
                f"Item {item_id} of job {job_id} has no {kind.value} (status {item.status}).",
                job_id=job_id,
                item_id=item_id,
                artifact=kind.value,
            )
        return StoredArtifact(item_id, kind, row.media_type, bytes(row.data))

    def export_parts(self, job_id: int) -> Iterator[bytes]:
        """A data_export job's parts in item order, one database read per part (each may be large)."""
        with self.db.read() as conn:
            ids = list(
                conn.execute(
                    select(item_artifacts.c.id)
                    .join(items, items.c.id == item_artifacts.c.item_id)
                    .where(
                        item_artifacts.c.job_id == job_id, item_artifacts.c.kind == ArtifactKind.EXPORT.value
                    )
                    .order_by(items.c.seq)
                ).scalars()
            )
        for artifact_id in ids:
            with self.db.read() as conn:
                data = conn.execute(
                    select(item_artifacts.c.data).where(item_artifacts.c.id == artifact_id)
                ).scalar()
            if data is not None:
                yield bytes(data)
