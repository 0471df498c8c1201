"""Modzy dialect: ``/api/jobs`` and ``/api/results``, a thin translation over the job services.

Jobs are addressed by their UUID (``jobIdentifier``). Submission with ``text``, ``embedded`` or
``aws-s3`` inputs queues at once (S3 objects are fetched at submit, with the request's
credentials when it gives them); submission without ``input`` opens the job for chunked file inputs
(``POST /api/jobs/{id}/{item}/{input}``) until ``POST /api/jobs/{id}/close`` queues it.
``GET /api/jobs/{id}`` answers with a weak ``ETag`` and honours ``If-None-Match`` like the native
detail (api/conditional.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import RowMapping

from conveyor.api import conditional, lanes
from conveyor.api.conditional import NOT_MODIFIED_DOC
from conveyor.api.deps import JobReaderDep, JobsDep, PrincipalDep, SettingsDep
from conveyor.api.routes.modzy_models import find_version
from conveyor.api.schemas.modzy import (
    CLOCKED,
    ModzyJobCreate,
    history_statuses,
    ordering,
    parse_date,
    present_job,
    present_results,
)
from conveyor.domain.access import Principal, scope_of
from conveyor.domain.status import JobStatus
from conveyor.errors import NotFound, UnknownPipeline
from conveyor.services.jobs import JobService
from conveyor.services.uploads import UploadService
from conveyor.store.history import HistoryQuery

router = APIRouter(prefix="/api", tags=["modzy"])
INPUTS_IN_DETAIL = 100  # jobInputs descriptors in one job's detail
INPUTS_IN_HISTORY = 10  # ... and per job of a history page


def get_uploads(jobs: JobsDep) -> UploadService:
    return UploadService(jobs)


UploadsDep = Annotated[UploadService, Depends(get_uploads)]


def _job_id(jobs: JobService, principal: Principal, identifier: str) -> int:
    return jobs.store.jobs.id_for_uuid(scope_of(principal), identifier)


def _present(
    jobs: JobService, principal: Principal, rows: list[RowMapping], per_job: int
) -> list[dict[str, Any]]:
    prefixes = {r["submitted_by"] for r in rows if r["submitted_by"]}
    names = jobs.store.auth.key_names(principal.account_id, prefixes)
    inputs = jobs.store.jobs.first_items([r["id"] for r in rows], per_job)
    return [
        present_job(r, account=principal.account_slug, key_names=names, inputs=inputs.get(r["id"], []))
        for r in rows
    ]


def _detail(
    jobs: JobService, principal: Principal, job_id: int | None = None, *, uuid: str | None = None
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """One job's row and Modzy object, from one read (row, submitting key's name, inputs)."""
    detail = jobs.detail(principal, job_id, uuid=uuid, logs=False, inputs=INPUTS_IN_DETAIL)
    row = detail.row
    names = {row["submitted_by"]: row["submitted_by_name"]} if row["submitted_by_name"] is not None else {}
    body = present_job(row, account=principal.account_slug, key_names=names, inputs=detail.inputs)
    return row, body


def _job_response(jobs: JobService, principal: Principal, job_id: int) -> JSONResponse:
    return JSONResponse(_detail(jobs, principal, job_id)[1])


def _job_etag(principal: Principal, uuid: str, version: int, status: JobStatus) -> str:
    """The job object's weak ETag: the row's version (bumped by every update of the job: status,
    counters, timestamps, items) and the caller's account (``accountIdentifier``). While the job
    is queued or running its ``queueTime``/``elapsedTime`` grow with the clock, so the tag also
    changes every second then: a 304 is never more than a second behind them."""
    tick = int(time.time()) if status in CLOCKED else 0
    return conditional.make_etag("modzy-job", principal.account_slug, uuid, version, tick)


@router.get(
    "/jobs/features",
    summary="Job features: the chunk size for file inputs",
    description="modzy-sdk reads `input_chunk_maximum_size` before uploading file inputs.",
)
def features(_: PrincipalDep, settings: SettingsDep) -> JSONResponse:
    return JSONResponse(
        {
            "input_chunk_maximum_size": _human_size(settings.modzy_chunk_bytes),
            "maximum_input_size": _human_size(settings.max_input_bytes),
            "maximum_inputs_per_job": settings.max_inputs_per_job,
        }
    )


def _human_size(n: int) -> str:
    # The shape modzy-sdk parses: a number and a unit of its DataUnit enum (i = bytes).
    for unit, size in (("Mi", 1024 * 1024), ("Ki", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}i"


@router.get(
    "/jobs/history",
    summary="Job history: filter, sort and page through jobs (a JSON list of jobs)",
    description="Status accepts all, pending (not finished), terminated (finished), timedout, Modzy's "
    "names (SUBMITTED, IN_PROGRESS, COMPLETED, CANCELED, FAILED, TIMEDOUT, OPEN) and canonical states.",
)
def history(
    jobs: JobsDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    user: Annotated[str | None, Query(description="Name of the submitting API key.")] = None,
    access_key: Annotated[
        str | None, Query(alias="accessKey", description="Public prefix of the key.")
    ] = None,
    start_date: Annotated[
        str | None, Query(alias="startDate", description="Created at or after (ISO).")
    ] = None,
    end_date: Annotated[str | None, Query(alias="endDate", description="Created before (ISO).")] = None,
    model: Annotated[str | None, Query(description="Model identifier or name.")] = None,
    status: Annotated[str, Query(description="all, pending, terminated, timedout, or a state.")] = "all",
    sort_by: Annotated[
        str | None,
        Query(alias="sort-by", description="createdAt, submittedAt, updatedAt, status, elapsedTime, name."),
    ] = None,
    direction: Annotated[str | None, Query(description="asc or desc (default desc).")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000_000, description="1-based page number.")] = 1,
    per_page: Annotated[int | None, Query(alias="per-page", ge=1)] = None,
) -> JSONResponse:
    size = min(per_page or settings.default_page_size, settings.max_page_size)
    named = jobs.store.auth.prefixes_named(principal.account_id, user) if user is not None else None
    query = HistoryQuery(
        statuses=history_statuses(status),
        pipeline=_model_slug(jobs, model) if model else None,
        created_after=parse_date("startDate", start_date),
        created_before=parse_date("endDate", end_date),
        submitted_by=access_key,
        ordering=ordering(sort_by, direction),
        limit=size,
        offset=(page - 1) * size,
        submitted_by_any=named,
    )
    page_rows = jobs.history(principal, query)
    return JSONResponse(_present(jobs, principal, page_rows.rows, INPUTS_IN_HISTORY))


def _model_slug(jobs: JobService, model: str) -> str:
    """An identifier as is; a model's name -> its identifier (unknown: matches no job)."""
    for row in jobs.store.pipelines.all():
        if model in (row["slug"], row["name"]):
            return str(row["slug"])
    return model


@router.post(
    "/jobs",
    summary="Submit a job (text, embedded or aws-s3 inputs), or open one for chunked file inputs",
    description="With `input` of type `text` or `embedded` (base64 `data:` URIs) the job is queued at once. "
    "With type `aws-s3` each source is `{input name: {bucket, key}}`: the objects are fetched at submit "
    "from the server's S3 endpoint (`CONVEYOR_S3_ENDPOINT_URL`) with the request's `accessKeyID`, "
    "`secretAccessKey` and `region` (used for this submission only, never stored), or the server's own "
    "S3 credentials when none are given; a missing bucket/key or an object that cannot be fetched is a "
    "400 naming the source and no job is created. "
    "Without `input` it is OPEN: upload each file input in chunks to `/api/jobs/{id}/{item}/{input}` "
    "(multipart field `input`), then `POST /api/jobs/{id}/close`. `timeout` is in milliseconds.",
)
async def submit(http: Request, body: ModzyJobCreate, jobs: JobsDep, principal: PrincipalDep) -> JSONResponse:
    def work() -> JSONResponse:
        try:
            version = find_version(jobs.store, body.model.identifier, body.model.version)
        except NotFound as missing:
            raise UnknownPipeline(missing.message, **missing.detail) from None
        request = body.to_request(version["id"])
        job_id = jobs.submit(principal, request, start_now=True, open_for_uploads=body.input is None)
        return _job_response(jobs, principal, job_id)

    return await lanes.run_submit(http, work)  # never queued behind the status polls


@router.get(
    "/jobs/{job_identifier}",
    summary="One job: status, counters, timings (Modzy's job object)",
    description="Answers with a weak `ETag`; send it back in `If-None-Match` to get `304 Not Modified` "
    "(no body) while the job is unchanged (while it is queued or running, its times change the tag "
    "every second). A canceled job reads CANCELED at once, while its workers stop.",
    responses=NOT_MODIFIED_DOC,
)
def get_job(request: Request, job_identifier: str, reader: JobReaderDep) -> Response:
    jobs, principal = reader.jobs, reader.principal
    if request.headers.get("if-none-match"):  # one indexed read decides a 304
        version, status = jobs.tag_by_uuid(principal, job_identifier)
        hit = conditional.not_modified(request, _job_etag(principal, job_identifier, version, status))
        if hit is not None:
            return hit
    row, body = _detail(jobs, principal, uuid=job_identifier)
    etag = _job_etag(principal, row["uuid"], row["version"], JobStatus(row["status"]))
    return conditional.tagged(JSONResponse(body), etag)


@router.delete(
    "/jobs/{job_identifier}",
    summary="Cancel a job",
    description="Answers with the job CANCELED, and reads show CANCELED from then on: an OPEN or queued "
    "job is revoked at once; a running one can no longer complete and its workers stop within seconds "
    "(`finishedAt` is set then; results say `finished: true` at once). An OPEN job's uploaded chunks "
    "are dropped. A finished job is a 409.",
)
def cancel(job_identifier: str, jobs: JobsDep, uploads: UploadsDep, principal: PrincipalDep) -> JSONResponse:
    job_id = _job_id(jobs, principal, job_identifier)
    uploads.cancel(principal, job_id)
    return _job_response(jobs, principal, job_id)


@router.post(
    "/jobs/{job_identifier}/close",
    summary="Close an OPEN job: its uploaded inputs become items and it is queued",
    description="Each uploaded input is written to the blob store (CONVEYOR_BLOB_URL) under the "
    "job's prefix; its item keeps only the blob's ref, size and sha256. Deleting the job "
    "deletes those blobs.",
)
def close(job_identifier: str, jobs: JobsDep, uploads: UploadsDep, principal: PrincipalDep) -> JSONResponse:
    job_id = _job_id(jobs, principal, job_identifier)
    uploads.close(principal, job_id)
    return _job_response(jobs, principal, job_id)


@router.post(
    "/jobs/{job_identifier}/{item}/{input_name}",
    summary="Append a chunk to one file input of an OPEN job",
    description="Multipart field `input`. Chunks of one input are concatenated in arrival order; each "
    "input and the job are held to the server's byte caps (413, chunk not stored).",
)
def append_chunk(
    job_identifier: str,
    item: str,
    input_name: str,
    chunk: Annotated[UploadFile, File(alias="input", description="The next bytes of the input.")],
    jobs: JobsDep,
    uploads: UploadsDep,
    principal: PrincipalDep,
) -> JSONResponse:
    job_id = _job_id(jobs, principal, job_identifier)
    size = uploads.append(principal, job_id, item, input_name, chunk.file.read())
    return JSONResponse({"jobIdentifier": job_identifier, "item": item, "input": input_name, "bytes": size})


@router.get(
    "/results/{job_identifier}",
    summary="A job's results: outputs per source under `results`, errors under `failures`",
    description="`finished` turns true once the job is terminal (COMPLETED, FAILED, CANCELED, TIMEDOUT).",
)
def results(job_identifier: str, jobs: JobsDep, principal: PrincipalDep) -> JSONResponse:
    job_id = _job_id(jobs, principal, job_identifier)
    row = jobs.get(principal, job_id)

    def finished_items() -> Iterator[RowMapping]:
        after = -1
        while True:
            _, page = jobs.items(
                principal, job_id, statuses=["SUCCESS", "FAILURE"], after_seq=after, limit=1000
            )
            if not page:
                return
            yield from page
            after = page[-1]["seq"]

    return JSONResponse(present_results(row, principal.account_slug, finished_items()))
