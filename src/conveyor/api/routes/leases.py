"""``/api/v2/workers/leases/``: HTTP workers (``conveyor worker --server``) lease item chunks,
renew them, post results and hand them back (thin routes over services/leases.py).

Worker keys (role ``worker``) are let in here and nowhere else; member and owner keys may lease
too, viewer keys may not. A chunk of another account (or outside a project-bound key's
projects) is a 404.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.api.deps import DbId, SettingsDep, WorkerPrincipalDep
from conveyor.api.schemas.leases import (
    HeartbeatOut,
    JobState,
    LeaseAnswer,
    LeaseRequest,
    LeaseTerms,
    ReleaseIn,
    ResultsIn,
    ResultsOut,
    TokenIn,
)
from conveyor.clock import isoformat, utcnow
from conveyor.domain.artifacts import Artifact, ArtifactKind
from conveyor.domain.work import ItemOutcome, LogLine
from conveyor.errors import InvalidInput
from conveyor.services.leases import LeaseService

router = APIRouter(prefix="/api/v2/workers/leases", tags=["workers"])


def _service(request: Request) -> LeaseService:
    service: LeaseService = request.app.state.leases
    return service


@router.get(
    "/terms/",
    response_model=LeaseTerms,
    summary="The lease timings of this server (an HTTP worker reads them at start)",
    description="Also a check of the key: 401 for an unknown or revoked key, 403 for a key that may "
    "not lease.",
)
def lease_terms(principal: WorkerPrincipalDep, settings: SettingsDep) -> LeaseTerms:
    return LeaseTerms(
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.resolved_heartbeat_seconds,
        flush_seconds=settings.flush_seconds,
        media_url_seconds=settings.media_url_seconds,
    )


@router.post(
    "/",
    response_model=LeaseAnswer,
    summary="Lease the next queued item chunk of these pipelines",
    description="Leases the oldest queued item chunk of a running job of the key's account (or its projects) "
    "whose pipeline is one of `pipelines`, and starts the job if it was pending. The answer holds the lease "
    "(`chunk_id`, `token`, `expires_at`), the job's state and config, and the chunk's items not written yet, "
    "each with its bytes (`data_b64`), a public `ref` the worker reads itself, or a signed `media_path` on "
    "this server. Renew the lease every `heartbeat_seconds`; a lease not renewed for `lease_seconds` goes "
    'to another worker, which gets only the items not written back. `{"lease": null}`: nothing to do now.',
)
def lease(
    body: LeaseRequest, request: Request, principal: WorkerPrincipalDep, settings: SettingsDep
) -> JSONResponse:
    leased = _service(request).lease(principal, name=body.name, host=body.host, pipelines=body.pipelines)
    if leased is None:
        return JSONResponse({"lease": None})
    job, claim = leased.job, leased.claim
    # The documented shape (LeaseAnswer), built as plain JSON: a lease holds a chunk's worth of
    # items, and validating them again as models would cost more than the claim.
    return JSONResponse(
        {
            "lease": {
                "chunk_id": claim.chunk_id,
                "token": claim.token,
                "expires_at": isoformat(utcnow() + timedelta(seconds=settings.lease_seconds)),
                "lease_seconds": settings.lease_seconds,
                "heartbeat_seconds": settings.resolved_heartbeat_seconds,
                "attempt": claim.attempt,
                "job": {
                    "id": job.job_id,
                    "status": job.status.value,
                    "pipeline": job.pipeline_slug,
                    "config": job.config,
                    "explain": job.explain,
                    "deadline_at": isoformat(job.deadline_at),
                },
                "items": [
                    {
                        "id": i.id,
                        "seq": i.seq,
                        "name": i.name,
                        "kind": i.kind,
                        "data_b64": i.data_b64,
                        "ref": i.ref,
                        "media_path": i.media_path,
                        "counts_input_bytes": i.counts_input_bytes,
                    }
                    for i in leased.items
                ],
            }
        }
    )


@router.post(
    "/{chunk_id}/heartbeat/",
    response_model=HeartbeatOut,
    summary="Renew a lease; the answer says whether the job was canceled or timed out",
    description="`held: false`: the lease was lost (it expired and another worker holds the chunk): stop and "
    "post nothing. Otherwise `job` is the job's state: stop (and release with `requeue: false`) when its "
    "status is no longer STARTED/PENDING or its `deadline_at` has passed.",
)
def heartbeat(chunk_id: DbId, body: TokenIn, request: Request, principal: WorkerPrincipalDep) -> HeartbeatOut:
    job = _service(request).heartbeat(principal, chunk_id, body.token)
    if job is None:
        return HeartbeatOut(held=False, job=None)
    return HeartbeatOut(held=True, job=JobState(status=job.status.value, deadline_at=job.deadline_at))


def _decode(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64.") from None


@router.post(
    "/{chunk_id}/results/",
    response_model=ResultsOut,
    summary="Post finished items, logs and stage parameters of a leased chunk (all in one transaction)",
    description="Written only while the lease holds, and only over items still pending: a post replayed "
    "after a lost answer, or a late one after the chunk went to another worker, changes no item and no "
    "counter. "
    "Outcome ids outside the chunk are ignored. `complete: true` marks the chunk done. Artifacts "
    "(thumbnails, explanations) travel base64. The job's output shards (if it has an `output`) are written "
    "by the server when the job ends.",
)
def results(chunk_id: DbId, body: ResultsIn, request: Request, principal: WorkerPrincipalDep) -> ResultsOut:
    now = utcnow()
    outcomes = [
        ItemOutcome(
            o["id"],
            o["ok"],
            result=o.get("result"),
            error=o.get("error"),
            started_at=o.get("started_at") or now,
            finished_at=o.get("finished_at") or now,
            artifacts=tuple(
                Artifact(
                    ArtifactKind(a["kind"]),
                    a["media_type"],
                    _decode(a["data_b64"], f"An artifact of item {o['id']}"),
                )
                for a in o.get("artifacts", ())
            ),
            byte_size=o.get("byte_size"),
        )
        for o in body.outcomes
    ]
    logs = [LogLine(line["level"], line["message"], line.get("created_at") or now) for line in body.logs]
    stage_params = (
        {stage: [p.model_dump() for p in params] for stage, params in body.stage_params.items()}
        if body.stage_params
        else None
    )
    wrote = _service(request).post_results(
        principal, chunk_id, body.token, outcomes, logs, complete=body.complete, stage_params=stage_params
    )
    return ResultsOut(held=wrote.held, job_status=wrote.job_status.value if wrote.job_status else None)


@router.post(
    "/{chunk_id}/release/",
    status_code=204,
    summary="Hand a leased chunk back (re-queue it, or drop it when its job was canceled or timed out)",
    description="A chunk of a job still running goes back to the queue either way. A wrong token is a no-op.",
)
def release(chunk_id: DbId, body: ReleaseIn, request: Request, principal: WorkerPrincipalDep) -> None:
    _service(request).release(principal, chunk_id, body.token, requeue=body.requeue)
