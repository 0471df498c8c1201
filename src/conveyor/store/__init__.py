"""Persistence: one SQLAlchemy Core store for SQLite and PostgreSQL, split into repositories
(workers' verbs in ``chunks``, the sweeper's in ``sweeping``)."""

from __future__ import annotations

from sqlalchemy import text

from conveyor.blobs import BlobStore, open_blob_store
from conveyor.settings import Settings
from conveyor.store.artifacts import ArtifactRepository
from conveyor.store.audit import AuditRepository
from conveyor.store.auth import AuthRepository
from conveyor.store.changes import ChangeFeed
from conveyor.store.chunks import ChunkRepository
from conveyor.store.collecting import CollectRepository
from conveyor.store.collections import CollectionRepository
from conveyor.store.database import Database
from conveyor.store.history import HistoryRepository
from conveyor.store.jobs import JobRepository
from conveyor.store.memberships import MembershipRepository
from conveyor.store.outputs import OutputRepository
from conveyor.store.pipelines import PipelineRepository
from conveyor.store.processing_services import ProcessingServiceRepository
from conveyor.store.pull import PullRepository
from conveyor.store.quotas import QuotaRepository
from conveyor.store.stats import StatsRepository
from conveyor.store.sweeping import SweepRepository
from conveyor.store.uploads import UploadRepository
from conveyor.store.workers import WorkerRepository

#: Antenna's CONVEYOR_PULL_LEASE_SECONDS default, until the pull protocol's setting exists.
PULL_LEASE_SECONDS = 300.0


def lost_after_seconds(settings: Settings) -> dict[str, float]:
    """Per worker kind, the silence after which a worker counts as lost: the lease it holds (a
    chunk's for local, Celery and HTTP workers; a pull task's for Antenna pull workers)."""
    pull = float(getattr(settings, "pull_lease_seconds", PULL_LEASE_SECONDS))
    lease = settings.lease_seconds
    return {"local": lease, "celery": lease, "http": lease, "pull": pull}


class Store:
    """The repositories over one database, and the blob store that holds the bytes items refer to."""

    def __init__(self, settings: Settings, *, pool_size: int = 5) -> None:
        if settings.database_url is None:
            settings.ensure_data_dir()
        self.settings = settings
        self.db = Database(settings.resolved_database_url, pool_size=pool_size)
        self.blobs: BlobStore = open_blob_store(settings)
        self.jobs = JobRepository(self.db, chunk_size=settings.chunk_size)
        self.chunks = ChunkRepository(self.db)
        self.collecting = CollectRepository(self.db)
        self.sweeping = SweepRepository(self.db)
        self.auth = AuthRepository(self.db)
        self.pipelines = PipelineRepository(self.db)
        self.history = HistoryRepository(
            self.db,
            exact_count_limit=settings.history_exact_count_limit,
            count_cache_seconds=settings.history_count_cache_seconds,
        )
        self.uploads = UploadRepository(self.db, self.jobs)
        self.changes = ChangeFeed(self.db)
        self.memberships = MembershipRepository(self.db, self.auth.cache)
        self.audit = AuditRepository(self.db)
        self.quotas = QuotaRepository(self.db)
        self.collections = CollectionRepository(self.db, self.blobs)
        self.stats = StatsRepository(self.db)
        self.artifacts = ArtifactRepository(self.db)
        self.processing_services = ProcessingServiceRepository(self.db)
        self.outputs = OutputRepository(self.db)
        self.workers = WorkerRepository(self.db, lost_after_seconds=lost_after_seconds(settings))
        self.pull = PullRepository(self.db)

    def ping(self) -> None:
        """One round trip to the database (``/readyz``); raises whatever the driver raises."""
        with self.db.read() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.db.dispose()


__all__ = ["Store"]
