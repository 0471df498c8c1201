"""``/api/v2/workers/``: the worker registry (thin route over services/workers.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from conveyor.api.deps import JobsDep, PrincipalDep
from conveyor.api.schemas.workers import WorkerOut, present_worker
from conveyor.domain.workers import WorkerKind, WorkerState
from conveyor.services.workers import MAX_LIMIT

router = APIRouter(prefix="/api/v2", tags=["workers"])


@router.get(
    "/workers/",
    response_model=list[WorkerOut],
    summary="Workers: the deployment's own (local, Celery) and this account's (HTTP, pull), most recently "
    "seen first",
    description="Every worker reports itself when it starts, when its job changes, about once a second "
    "while it finishes items and every few seconds while idle. One that stays silent for longer than a "
    "lease (`CONVEYOR_LEASE_SECONDS`; for pull workers the pull protocol's task lease) is `lost`: its "
    "leases ran out and its work went back to the queue. Stopped and lost workers stay listed until "
    "they have been silent for 7 days. Any key may read it.",
)
def list_workers(
    jobs: JobsDep,
    principal: PrincipalDep,
    kind: Annotated[WorkerKind | None, Query(description="Only workers of this kind.")] = None,
    state: Annotated[WorkerState | None, Query(description="Only workers in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many (paging).")] = 0,
) -> JSONResponse:
    rows = jobs.workers.list(principal, kind=kind, state=state, limit=limit, offset=offset)
    return JSONResponse([present_worker(r) for r in rows])
