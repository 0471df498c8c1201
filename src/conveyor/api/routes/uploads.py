"""``POST /api/v2/jobs/upload/``: submit a job whose inputs are uploaded files (multipart)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import BaseUrlDep, JobsDep, PrincipalDep, SettingsDep
from conveyor.api.routes.jobs import job_response
from conveyor.api.schemas.jobs import JobCreate, JobOut
from conveyor.errors import InvalidInput
from conveyor.inputs.upload import UploadLimits, receive_upload
from conveyor.settings import Settings

router = APIRouter(prefix="/api/v2/jobs", tags=["jobs"])

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["job"],
                "properties": {
                    "job": {
                        "type": "string",
                        "description": "The job as JSON, the same object as `POST /api/v2/jobs/` takes "
                        "(`inputs` may be left out or hold inline inputs that come before the files).",
                        "example": '{"name": "photos", "pipeline": "digits"}',
                    },
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "The input files, one item each, in order. Any field name works; "
                        "the item is named after the file's base name.",
                    },
                },
            }
        }
    },
}


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_file_bytes=settings.max_input_bytes,
        max_total_bytes=settings.job_bytes_cap,
        max_request_bytes=settings.max_request_bytes,
        max_field_bytes=settings.max_form_field_bytes,
        max_files=settings.max_inputs_per_job,
    )


def parse_job_field(fields: dict[str, str]) -> JobCreate:
    raw = fields.get("job")
    if raw is None:
        raise InvalidInput("The upload needs a `job` form field holding the job's JSON options.")
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"The `job` form field is not valid JSON: {exc}.") from None
    try:
        return JobCreate.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("job", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@router.post(
    "/upload/",
    status_code=201,
    response_model=JobOut,
    summary="Submit a job over uploaded files (multipart)",
    description="A `multipart/form-data` body with a `job` field (the job's JSON options, as for "
    "`POST /api/v2/jobs/`) and any number of files. Files are streamed to temporary files on "
    "disk as they arrive; one over `CONVEYOR_MAX_INPUT_BYTES`, or all together over "
    "`CONVEYOR_MAX_JOB_BYTES`, stops the upload with 413. Each file becomes one item named "
    "after the file's base name (directories in client names are dropped). The job and its "
    "items are written in one transaction after the whole body is checked; the temporary "
    "files are removed when the request ends, whatever its outcome.",
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_job(
    request: Request,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    settings: SettingsDep,
    start_now: Annotated[bool, Query(description="Queue the job immediately.")] = False,
) -> JSONResponse:
    tmp_root = settings.data_dir / "tmp"
    async with receive_upload(request, tmp_root, upload_limits(settings)) as upload:
        body = parse_job_field(upload.fields)
        job_id = await run_in_threadpool(
            jobs.submit, principal, body.to_request(upload.files), start_now=start_now
        )
    return await run_in_threadpool(job_response, jobs, principal, job_id, base, 201)
