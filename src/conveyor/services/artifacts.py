"""Reading item artifacts (samples, explanations) with the same tenant scoping as jobs."""

from __future__ import annotations

from conveyor.domain.access import Principal, scope_of
from conveyor.domain.artifacts import ArtifactKind
from conveyor.store import Store
from conveyor.store.artifacts import StoredArtifact


class ArtifactService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, principal: Principal, job_id: int, item_id: int, kind: ArtifactKind) -> StoredArtifact:
        """NotFound (404) for a job outside the caller's scope, an item of another job, or no artifact."""
        return self.store.artifacts.get(scope_of(principal), job_id, item_id, kind)
