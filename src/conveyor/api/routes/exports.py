"""``/api/v2/exports/``: ``data_export`` jobs writing several jobs' results into one file, and
``/api/v2/jobs/{id}/export/``: that file (thin routes over JobService)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor import exports
from conveyor.api.deps import BaseUrlDep, DbId, JobsDep, PrincipalDep
from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX
from conveyor.api.schemas.jobs import JobOut, present_job
from conveyor.services.jobs import MAX_EXPORT_JOBS

router = APIRouter(prefix="/api/v2", tags=["exports"])


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_ids: list[Annotated[int, Field(ge=1, le=DB_INT_MAX)]] = Field(
        min_length=1,
        max_length=MAX_EXPORT_JOBS,
        description="Jobs whose finished items to export, in this order (each readable by the key).",
    )
    format: exports.Format = Field(default="csv", description="`json`, `jsonl` or `csv`.")
    name: str | None = Field(default=None, min_length=1, max_length=500, description="Default: from the ids.")
    project_id: int | None = Field(
        default=None,
        ge=-DB_INT32_MAX - 1,
        le=DB_INT32_MAX,
        description="Default: the key's project or `default`.",
    )


@router.post(
    "/exports/",
    status_code=201,
    response_model=JobOut,
    summary="Export the results of one or more jobs into one file, as a data_export job",
    description="Creates and queues a job of type `data_export` with one item per source job; its progress, "
    "logs, cancel and retry work like any job's. When it has succeeded, download the file from "
    "`GET /api/v2/jobs/{id}/export/`. Rows: `job_id`, `item_id`, `seq`, `name`, `source`, `status`, "
    "`result`, `error`, `duration_ms` — the finished items of each job at the time its part is written.",
)
def create_export(
    body: ExportCreate, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    job_id = jobs.export(principal, body.job_ids, body.format, name=body.name, project_id=body.project_id)
    return JSONResponse(present_job(jobs.get(principal, job_id), base), status_code=201)


@router.get(
    "/jobs/{job_id}/export/",
    summary="Download a succeeded data_export job's file",
    description="404 for a job that is not a data export, 409 until it has succeeded.",
    response_class=StreamingResponse,
)
def download_export(job_id: DbId, jobs: JobsDep, principal: PrincipalDep) -> StreamingResponse:
    fmt, rows = jobs.export_rows(principal, job_id)
    headers = {"Content-Disposition": f'attachment; filename="export-{job_id}.{fmt}"'}
    return StreamingResponse(exports.encode(rows, fmt), media_type=exports.MEDIA_TYPES[fmt], headers=headers)
