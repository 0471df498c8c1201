"""``/api/v2/jobs/``: thin routes over the job service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from conveyor import exports
from conveyor.api import conditional, lanes
from conveyor.api.conditional import NOT_MODIFIED_DOC
from conveyor.api.deps import (
    AnyPrincipalDep,
    BaseUrlDep,
    DbId,
    JobReaderDep,
    JobsDep,
    PrincipalDep,
    SettingsDep,
)
from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX
from conveyor.api.schemas.jobs import (
    EventOut,
    ItemPage,
    JobCreate,
    JobIdsPage,
    JobOut,
    JobPage,
    LogPage,
    format_log,
    present_item,
    present_job,
)
from conveyor.clock import isoformat
from conveyor.domain.access import LEASE_ROLES, Principal, refuse_worker_key
from conveyor.domain.pull import ASYNC_API, registered_slug
from conveyor.domain.status import ACTIVE, resolve_status_filter
from conveyor.errors import InvalidInput
from conveyor.services.jobs import JobService
from conveyor.store.history import HistoryPage, HistoryQuery

router = APIRouter(prefix="/api/v2/jobs", tags=["jobs"])
ITEM_STATUSES = {"PENDING", "SUCCESS", "FAILURE", "CANCELED"}


def _permissions(principal: Principal) -> list[str]:
    return ["view", "run", "cancel", "retry", "delete"] if principal.can_write else ["view"]


def job_response(
    jobs: JobService,
    principal: Principal,
    job_id: int,
    base: str,
    status_code: int = 200,
    request: Request | None = None,
) -> JSONResponse:
    """The job's detail; with ``request`` (a GET) tagged with its ETag."""
    detail = jobs.detail(principal, job_id)  # the row and its newest log lines, in one read
    row, logs = detail.row, detail.logs
    body = present_job(row, base, logs=logs, permissions=_permissions(principal))
    response = JSONResponse(body, status_code=status_code)
    if request is None:
        return response
    etag = _detail_etag(request, principal, base, row["uuid"], row["version"], logs[0]["id"] if logs else 0)
    return conditional.tagged(response, etag)


def _detail_etag(
    request: Request, principal: Principal, base: str, uuid: str, version: int, newest_log: int
) -> str:
    """The detail's weak ETag: the job's row version and newest log id (the detail shows recent
    lines), the URL, base and the caller's permissions (both shape the body)."""
    return conditional.make_etag(
        "job", str(request.url), base, _permissions(principal), uuid, version, newest_log
    )


def _page_link(request: Request, **changes: Any) -> str:
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return str(request.url.replace_query_params(**params))


@router.get(
    "/",
    response_model=JobPage | JobIdsPage,
    summary="Job history: filter, order and page through jobs",
    description="Answers with a weak `ETag` over the page (its jobs' versions, the count, the links); "
    "with a matching `If-None-Match` the answer is `304 Not Modified` without a body. Antenna's pull "
    "workers poll `GET /api/v2/jobs?pipeline__slug__in=a,b&ids_only=1&incomplete_only=1&"
    "dispatch_mode=async_api` (also without the trailing slash, never redirected): with `ids_only` the "
    'results are `[{"id", "pipeline_slug"}]`.',
    responses=NOT_MODIFIED_DOC,
)
# Without the slash too (the ADC worker's path): a redirect would drop the Authorization header.
@router.get("", include_in_schema=False)
def list_jobs(
    request: Request,
    jobs: JobsDep,
    principal: AnyPrincipalDep,
    base: BaseUrlDep,
    settings: SettingsDep,
    status: Annotated[
        str | None,
        Query(
            description="A canonical state (SUCCESS, …) or a group: all, pending "
            "(not finished), terminated (finished), timedout. "
            "Comma-separate several."
        ),
    ] = None,
    pipeline: Annotated[str | None, Query(description="Pipeline slug or id.")] = None,
    project: Annotated[
        int | None, Query(ge=-DB_INT32_MAX - 1, le=DB_INT32_MAX, description="Project id.")
    ] = None,
    job_type_key: Annotated[str | None, Query(description="`ml` or `data_export`.")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    search: Annotated[str | None, Query(max_length=200, description="Substring of the job name.")] = None,
    submitted_by: Annotated[str | None, Query(description="Public prefix of the submitting API key.")] = None,
    ordering: Annotated[
        str,
        Query(description="created_at, updated_at, status, duration, name or id; prefix `-` for descending."),
    ] = "-created_at",
    limit: Annotated[
        int | None, Query(ge=1, le=DB_INT_MAX, description="Page size (capped by the server).")
    ] = None,
    offset: Annotated[
        int | None, Query(ge=0, le=DB_INT_MAX, description="Offset paging (slow deep down; prefer `cursor`).")
    ] = None,
    cursor: Annotated[str | None, Query(description="Opaque keyset cursor from `next`/`previous`.")] = None,
    dispatch_mode: Annotated[
        str | None, Query(max_length=20, description="`internal`, `celery` or `async_api` (pull workers).")
    ] = None,
    backend: Annotated[str | None, Query(max_length=20, include_in_schema=False)] = None,
    pipeline__slug__in: Annotated[
        str | None,
        Query(
            max_length=4000, description="Comma-separated pipeline slugs (a pull pipeline's registered slug)."
        ),
    ] = None,
    pipeline__slug: Annotated[str | None, Query(max_length=200, include_in_schema=False)] = None,
    incomplete_only: Annotated[bool, Query(description="Only jobs that have not finished.")] = False,
    ids_only: Annotated[
        bool, Query(description='Results as `{"id", "pipeline_slug"}` only (what pull workers read).')
    ] = False,
) -> Response:
    pull_poll = ids_only and (dispatch_mode or backend) == ASYNC_API
    if not pull_poll:
        refuse_worker_key(principal)  # a worker key may only poll the async_api job list
    size = min(limit or settings.default_page_size, settings.max_page_size)
    statuses = resolve_status_filter(status) if status else None
    if incomplete_only:
        statuses = ACTIVE if statuses is None else statuses & ACTIVE
    slugs = [s for s in (pipeline__slug__in or pipeline__slug or "").split(",") if s.strip()]
    query = HistoryQuery(
        statuses=statuses,
        dispatch_mode=dispatch_mode or backend,
        pipeline_slugs=[s.strip() for s in slugs]
        if (pipeline__slug__in or pipeline__slug) is not None
        else None,
        pipeline=pipeline,
        project_id=project,
        job_type=job_type_key,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
        updated_after=_aware(updated_after),
        updated_before=_aware(updated_before),
        search=search,
        submitted_by=submitted_by,
        ordering=ordering,
        limit=size,
        offset=offset,
        cursor=cursor,
    )
    page = jobs.history(principal, query)
    if pull_poll and principal.role in LEASE_ROLES:
        jobs.pull.seen(principal, None, pipelines=query.pipeline_slugs)
    if ids_only:
        return JSONResponse(_ids_page(request, page, size, offset))
    permissions = _permissions(principal)
    if page.next_offset is not None or page.previous_offset is not None or offset is not None:
        next_link = (
            _page_link(request, offset=page.next_offset, limit=size) if page.next_offset is not None else None
        )
        prev_link = (
            _page_link(request, offset=page.previous_offset, limit=size)
            if page.previous_offset is not None
            else None
        )
    else:
        next_link = _page_link(request, cursor=page.next_cursor, limit=size) if page.next_cursor else None
        prev_link = (
            _page_link(request, cursor=page.previous_cursor, limit=size) if page.previous_cursor else None
        )
    etag = conditional.make_etag(
        "history",
        str(request.url),
        base,
        permissions,
        page.count,
        page.count_exact,
        next_link,
        prev_link,
        [(row["id"], row["uuid"], row["version"]) for row in page.rows],
    )
    hit = conditional.not_modified(request, etag)  # no presenting or serialising for a 304
    if hit is not None:
        return hit
    body = {
        "count": page.count,
        "count_exact": page.count_exact,
        "next": next_link,
        "previous": prev_link,
        "results": [present_job(row, base, permissions=permissions) for row in page.rows],
    }
    return conditional.tagged(JSONResponse(body), etag)


def _ids_page(request: Request, page: HistoryPage, size: int, offset: int | None) -> dict[str, Any]:
    """Antenna's ``ids_only`` page: count, next, previous and ``[{"id", "pipeline_slug"}]``
    (the slug a pull worker registered, not Conveyor's ``pull:<project>/`` name)."""
    if offset is not None:
        nxt = (
            _page_link(request, offset=page.next_offset, limit=size) if page.next_offset is not None else None
        )
        prev = (
            _page_link(request, offset=page.previous_offset, limit=size)
            if page.previous_offset is not None
            else None
        )
    else:
        nxt = _page_link(request, cursor=page.next_cursor, limit=size) if page.next_cursor else None
        prev = _page_link(request, cursor=page.previous_cursor, limit=size) if page.previous_cursor else None
    return {
        "count": page.count,
        "next": nxt,
        "previous": prev,
        "count_exact": page.count_exact,
        "results": [
            {"id": row["id"], "pipeline_slug": registered_slug(row["pipeline_slug"])} for row in page.rows
        ],
    }


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)


@router.post(
    "/",
    status_code=201,
    response_model=JobOut,
    summary="Submit a job",
    description="Creates the job and all its items in one transaction. With `start_now=true` it is "
    "queued at once; otherwise it stays CREATED until `POST /api/v2/jobs/{id}/run/`.",
)
async def create_job(
    request: Request,
    body: JobCreate,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    start_now: Annotated[bool, Query(description="Queue the job immediately.")] = False,
) -> JSONResponse:
    def submit() -> JSONResponse:
        job_id = jobs.submit(principal, body.to_request(), start_now=start_now)
        return job_response(jobs, principal, job_id, base, status_code=201)

    return await lanes.run_submit(request, submit)  # never queued behind the status polls


@router.get(
    "/{job_id}/",
    response_model=JobOut,
    summary="One job with progress, counters and recent logs",
    description="Answers with a weak `ETag`; send it back in `If-None-Match` to get `304 Not Modified` "
    "(no body) while nothing visible changed: counters, status, stages, recent log lines, timestamps.",
    responses=NOT_MODIFIED_DOC,
)
def get_job(request: Request, job_id: DbId, reader: JobReaderDep) -> Response:
    jobs, principal, base = reader.jobs, reader.principal, reader.base
    if request.headers.get("if-none-match"):  # one indexed read decides a 304
        uuid, version, newest_log = jobs.tag(principal, job_id)
        if jobs.settings.job_log_lines_in_detail <= 0:
            newest_log = 0
        hit = conditional.not_modified(
            request, _detail_etag(request, principal, base, uuid, version, newest_log)
        )
        if hit is not None:
            return hit
    return job_response(jobs, principal, job_id, base, request=request)


@router.delete(
    "/{job_id}/",
    status_code=204,
    summary="Delete a finished (or never run) job with its items and logs",
    description="The bytes that came with the job's request (uploads, Modzy chunks, inline inputs "
    "kept in the blob store) are deleted from the blob store once the job's rows are gone. Stored "
    "collection items and inputs given by reference (URL, S3) are not touched.",
)
def delete_job(job_id: DbId, jobs: JobsDep, principal: PrincipalDep) -> Response:
    jobs.delete(principal, job_id)
    return Response(status_code=204)


@router.post("/{job_id}/run/", response_model=JobOut, summary="Queue a CREATED job")
def run_job(job_id: DbId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    jobs.run(principal, job_id)
    return job_response(jobs, principal, job_id, base)


@router.post(
    "/{job_id}/cancel/",
    response_model=JobOut,
    summary="Cancel: CANCELING until running workers stop (within ~2 s), then REVOKED",
)
def cancel_job(job_id: DbId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    jobs.cancel(principal, job_id)
    return job_response(jobs, principal, job_id, base)


@router.post(
    "/{job_id}/retry/", response_model=JobOut, summary="Re-run only the failed items of a finished job"
)
def retry_job(job_id: DbId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    jobs.retry(principal, job_id)
    return job_response(jobs, principal, job_id, base)


def _item_statuses(status: str | None) -> list[str] | None:
    if not status:
        return None
    wanted = [s.strip().upper() for s in status.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ITEM_STATUSES]
    if unknown:
        raise InvalidInput(f"Unknown item status {unknown[0]!r}; use {', '.join(sorted(ITEM_STATUSES))}.")
    return wanted


@router.get(
    "/{job_id}/items/",
    response_model=ItemPage,
    summary="The job's items with status, result and error",
    description="Answers with a weak `ETag` (every item change bumps the job's version); with a "
    "matching `If-None-Match` the answer is `304 Not Modified` without a body.",
    responses=NOT_MODIFIED_DOC,
)
def list_items(
    request: Request,
    job_id: DbId,
    jobs: JobsDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    status: Annotated[
        str | None, Query(description="PENDING, SUCCESS, FAILURE or CANCELED (comma-separated).")
    ] = None,
    after: Annotated[
        int, Query(ge=-1, le=DB_INT32_MAX, description="Return items with `seq` greater than this.")
    ] = -1,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> Response:
    size = min(limit or settings.default_page_size, settings.max_page_size)
    # Every item write (write-back, finish, retry, upload close) updates the job row in the same
    # transaction, so the job's version tags the items. Read before the items: a write landing in
    # between gives an older tag for a newer body, which only costs one more 200 later.
    uuid, version, _ = jobs.tag(principal, job_id)
    _item_statuses(status)  # a bad filter is a 422 even when the tag would match
    etag = conditional.make_etag("items", str(request.url), uuid, version)
    hit = conditional.not_modified(request, etag)
    if hit is not None:
        return hit
    count, rows = jobs.items(
        principal, job_id, statuses=_item_statuses(status), after_seq=after, limit=size + 1
    )
    more, rows = len(rows) > size, rows[:size]  # one extra row tells whether a next page exists
    next_link = _page_link(request, after=rows[-1]["seq"], limit=size) if more else None
    body = {"count": count, "next": next_link, "previous": None, "results": [present_item(r) for r in rows]}
    return conditional.tagged(JSONResponse(body), etag)


@router.get(
    "/{job_id}/logs/",
    response_model=LogPage,
    summary="The job's log, oldest first, paginated",
    description="Follow a running job by passing the returned `last_id` as `after`.",
)
def list_logs(
    request: Request,
    job_id: DbId,
    jobs: JobsDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=DB_INT_MAX, description="Only lines with an id greater than this.")
    ] = 0,
    level: Annotated[str | None, Query(description="Minimum level: DEBUG, INFO, WARNING, ERROR.")] = None,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> JSONResponse:
    size = min(limit or settings.default_page_size, settings.max_page_size)
    rows = jobs.logs(principal, job_id, after=after, level=level, limit=size)
    last_id = rows[-1]["id"] if rows else after
    return JSONResponse(
        {
            "next": _page_link(request, after=last_id, limit=size) if len(rows) == size else None,
            "last_id": last_id,
            "results": [
                {
                    "id": r["id"],
                    "created_at": isoformat(r["created_at"]),
                    "level": r["level"],
                    "message": r["message"],
                    "line": format_log(r),
                }
                for r in rows
            ],
        }
    )


@router.get(
    "/{job_id}/transitions/",
    response_model=list[EventOut],
    summary="Every status change of the job with its time and cause (audit trail)",
)
def list_transitions(job_id: DbId, jobs: JobsDep, principal: PrincipalDep) -> JSONResponse:
    rows = jobs.events(principal, job_id)
    return JSONResponse(
        [
            {
                "id": r["id"],
                "created_at": isoformat(r["created_at"]),
                "from_status": r["from_status"],
                "to_status": r["to_status"],
                "cause": r["cause"],
            }
            for r in rows
        ]
    )


@router.get(
    "/{job_id}/results/",
    summary="Export every finished item's result as JSON, JSON Lines or CSV",
    description="One row per finished item: `job_id`, `item_id`, `seq`, `name`, `source` (where its input "
    "came from), `status`, `result`, `error`, `duration_ms`. In CSV, `result` is a JSON string.",
    response_class=StreamingResponse,
)
def export_results(
    job_id: DbId,
    jobs: JobsDep,
    principal: PrincipalDep,
    format: Literal["json", "jsonl", "csv"] = "json",
) -> StreamingResponse:
    rows = jobs.result_rows(principal, job_id)  # 404 before streaming starts
    headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-results.{format}"'}
    return StreamingResponse(
        exports.encode(rows, format), media_type=exports.MEDIA_TYPES[format], headers=headers
    )
