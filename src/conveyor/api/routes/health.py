"""Liveness, readiness and the local worker pool's state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.api.deps import PrincipalDep, StoreDep

router = APIRouter(tags=["operations"])


@router.get("/livez", summary="The process is up (no auth)")
def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database and broker reachable, local workers alive (no auth)",
    responses={503: {"description": "Not ready: `checks` says what is wrong (same body as 200)."}},
)
def readyz(request: Request, store: StoreDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        store.ping()
        checks["database"] = "ok"
    except Exception as exc:  # reported, not raised: this endpoint exists to say what is wrong
        checks["database"] = f"error: {exc.__class__.__name__}"
    pool = getattr(request.app.state, "pool", None)
    if pool is not None:
        ready = sum(1 for w in pool.status() if w["alive"] and w["ready"])
        checks["workers"] = f"{ready}/{len(pool.slots)} ready"
        workers_ok = ready == len(pool.slots)
    else:
        checks["workers"] = "none in this process"
        workers_ok = True
    broker = request.app.state.jobs.dispatcher.check()
    if broker is not None:  # distributed mode: chunks reach workers through the broker
        checks["broker"] = broker
    ready = checks["database"] == "ok" and workers_ok and broker in (None, "ok")
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/api/v2/workers/pool/",
    summary="This server's local worker pool: each slot's pid, liveness, readiness, restarts, exit codes",
    description="The supervisor's view, from the server process that answers (empty without local "
    "workers). Every worker of the deployment, with its state and current job, is `GET /api/v2/workers/`.",
)
def worker_pool(request: Request, _: PrincipalDep) -> JSONResponse:
    pool = getattr(request.app.state, "pool", None)
    return JSONResponse(pool.status() if pool is not None else [])
