"""Who is working: the worker registry as one account sees it (``GET /api/v2/workers/``).

An account sees the deployment's own workers (local and Celery: they serve every account) and
its own HTTP and pull workers, never another account's. A deployment worker busy with another
account's job is shown active, but without that job's id.
"""

from __future__ import annotations

from dataclasses import replace

from conveyor.domain.access import Principal, scope_of
from conveyor.domain.workers import WorkerKind, WorkerState
from conveyor.store import Store
from conveyor.store.workers import WorkerRow

MAX_LIMIT = 1000


class Workers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(
        self,
        principal: Principal,
        *,
        kind: WorkerKind | None = None,
        state: WorkerState | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[WorkerRow]:
        """Most recently seen first, at most ``limit`` (capped at ``MAX_LIMIT``)."""
        rows = self.store.workers.list(
            principal.account_id, kind=kind, state=state, limit=min(limit, MAX_LIMIT), offset=offset
        )
        job_ids = {r.current_job_id for r in rows if r.current_job_id is not None}
        visible = self.store.workers.jobs_in_scope(job_ids, scope_of(principal))
        return [r if r.current_job_id in visible else replace(r, current_job_id=None) for r in rows]
