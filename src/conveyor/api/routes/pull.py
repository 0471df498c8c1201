"""Antenna's pull protocol (async_api), the ADC worker's wire unmodified: thin routes over
services/pull.py. The job list it polls (``GET /api/v2/jobs?ids_only=1&…``) is in routes/jobs.py."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import BaseUrlDep, DbId, JobsDep, SmallId, WorkerPrincipalDep
from conveyor.api.schemas.pull import (
    NextJobRequest,
    NextJobResponse,
    PullRegistered,
    PullRegistration,
    ResultsAccepted,
    TaskResult,
    TaskResults,
    TasksRequest,
    TasksResponse,
)

router = APIRouter(prefix="/api/v2", tags=["antenna pull workers"])


@router.post(
    "/projects/{project_id}/pipelines/",
    response_model=PullRegistered,
    summary="Register a pull processing service and its pipelines in a project (idempotent)",
    description="What Antenna's ADC worker sends on start-up. A second registration of the same service "
    "name updates it and its pipelines; nothing is duplicated. A job submitted in the project with "
    '`"pipeline": "<registered slug>"` becomes an `async_api` job, served only to pull workers (the '
    "registered slug wins over an installed pipeline of that slug, in that project). Needs a worker, "
    "member or owner key of the project.",
)
async def register_pull_service(
    project_id: SmallId, body: PullRegistration, jobs: JobsDep, principal: WorkerPrincipalDep
) -> JSONResponse:
    hostname = (body.client_info or {}).get("hostname")
    name = body.processing_service_name or (str(hostname) if hostname else None) or principal.key_name
    answer = await run_in_threadpool(jobs.pull.register, principal, project_id, name, body.pipelines)
    slugs = [*answer["pipelines_created"], *answer["pipelines_updated"]]
    await run_in_threadpool(jobs.pull.seen, principal, body.client_info, pipelines=slugs)
    return JSONResponse(answer, status_code=201 if answer["pipelines_created"] else 200)


@router.post(
    "/jobs/{job_id}/tasks/",
    response_model=TasksResponse,
    summary="Reserve up to batch_size tasks of an async_api job (Antenna pull protocol)",
    description="Leases PENDING items no delivery holds, each with a fresh `reply_subject`, for "
    "CONVEYOR_PULL_LEASE_SECONDS (then they are offered again; after CONVEYOR_PULL_MAX_DELIVERIES "
    'unanswered deliveries an item fails). A job that is not running answers `{"tasks": []}`; a job '
    "that is not async_api is a 400; a job the key cannot see is a 404.",
)
def reserve_tasks(
    job_id: DbId, body: TasksRequest, jobs: JobsDep, principal: WorkerPrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    jobs.pull.seen(principal, body.client_info, job_id=job_id)
    return JSONResponse({"tasks": jobs.pull.reserve(principal, job_id, body.batch_size, base)})


@router.post(
    "/jobs/{job_id}/result/",
    response_model=ResultsAccepted,
    summary="Post the results of reserved tasks (Antenna pull protocol)",
    description="Each result is applied once, in one transaction with the job's counters, and only "
    "under the task's current `reply_subject`: a repeated post, a late result after the task was "
    "offered again, an unknown subject, or a result after cancel is acknowledged and changes nothing "
    '(`applied: false`). `{"error", "image_id"}` fails the item with that message. The body may also '
    "be a bare list of results (older ADC workers).",
)
def post_results(
    job_id: DbId, body: TaskResults | list[TaskResult], jobs: JobsDep, principal: WorkerPrincipalDep
) -> JSONResponse:
    entries = body.results if isinstance(body, TaskResults) else body
    raw = [{"reply_subject": e.reply_subject, "result": e.result} for e in entries]
    answer = jobs.pull.post_results(principal, job_id, raw)
    jobs.pull.seen(principal, None, job_id=job_id, items_done=answer["results_applied"])
    return JSONResponse(answer)


@router.post(
    "/jobs/next/",
    response_model=NextJobResponse,
    summary="Claim the next async_api job with work left for these pipelines (Antenna #1265)",
    description="The oldest running or queued async_api job of one of `pipeline_slugs` that still has a "
    'task no worker holds, as `{"id", "pipeline_slug"}` (or `null`); with `batch_size` > 0 its first '
    "tasks are reserved in the same call, as `/tasks/` would.",
)
def next_job(
    body: NextJobRequest, jobs: JobsDep, principal: WorkerPrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    return JSONResponse(jobs.pull.next_job(principal, body.pipeline_slugs, body.batch_size, base))
