"""Live job events as Server-Sent Events: per job, and per project (or the whole account)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import RowMapping

from conveyor.api.deps import SCHEMES, BaseUrlDep, DbId, JobsDep, StoreDep
from conveyor.api.schemas.common import DB_INT32_MAX
from conveyor.api.schemas.jobs import format_log, present_job
from conveyor.clock import isoformat
from conveyor.domain.access import Principal, refuse_worker_key, scope_of
from conveyor.errors import NotFound, Unauthenticated
from conveyor.services.events import JOB, LOG, OVERFLOW, SHUTDOWN, STATUS, EventHub, EventStream, Outgoing
from conveyor.store.changes import Cursor

router = APIRouter(prefix="/api/v2", tags=["events"])

KEY_COOKIE = "conveyor_key"
RETRY_MS = 2000
STREAM_DESCRIPTION = """
A `text/event-stream` that stays open. Event types (`event:` field), each with a JSON `data:`:

* `job` — the job as `GET /api/v2/jobs/{id}/` shows it (status, counters, stage progress), sent
  on connect (per-job stream) and whenever its status, counters or progress change;
* `status` — one status transition `{id, job_id, created_at, from_status, to_status, cause}`;
* `log` — one new log line `{id, job_id, created_at, level, message, line}`;
* `shutdown` / `overflow` — the server is stopping, or this client fell too far behind: the
  stream ends; reconnect (EventSource does so by itself).

Every event's `id:` is a cursor `<transition id>.<log line id>`. Reconnect with the header
`Last-Event-ID: <cursor>` (browsers' EventSource sends it by itself) or `?last_event_id=` and
every transition and log line after it is replayed first, followed by fresh `job` snapshots;
nothing is lost. A comment line is sent every 15 s to keep proxies from closing an idle stream.

Authenticate with the usual `Authorization` header; browsers' EventSource cannot set headers, so
the key is also accepted as the query parameter `key` or the cookie `conveyor_key`.
"""


def stream_principal(
    request: Request,
    key: Annotated[
        str | None, Query(description="The API key, for clients that cannot send headers (EventSource).")
    ] = None,
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() in SCHEMES and token.strip():
        secret = token
    else:
        secret = key or request.cookies.get(KEY_COOKIE) or ""
    if not secret.strip():
        raise Unauthenticated(
            "Send your API key as `Authorization: Token <key>`, `?key=<key>` or the `conveyor_key` cookie."
        )
    principal: Principal = request.app.state.store.auth.authenticate(secret)
    request.state.principal = principal
    refuse_worker_key(principal)
    return principal


StreamPrincipalDep = Annotated[Principal, Depends(stream_principal)]
LastEventIdHeader = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Resume after this event id (cursor).")
]
LastEventIdQuery = Annotated[
    str | None, Query(description="Same as the `Last-Event-ID` header, for clients that cannot set it.")
]


@router.get(
    "/jobs/{job_id}/events/",
    summary="Live events of one job (Server-Sent Events)",
    description=STREAM_DESCRIPTION,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def job_events(
    request: Request,
    job_id: DbId,
    jobs: JobsDep,
    principal: StreamPrincipalDep,
    base: BaseUrlDep,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> StreamingResponse:
    jobs.get(principal, job_id)  # 404 for a job of another account (or project-bound key)
    stream = EventStream(
        _hub(request),
        scope_of(principal),
        job_id=job_id,
        resume=Cursor.parse(last_event_id_header or last_event_id),
    )
    return _response(stream, _presenter(principal, base))


@router.get(
    "/events/",
    summary="Live events of every job of a project, or of all jobs the key can see (Server-Sent Events)",
    description=STREAM_DESCRIPTION,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def project_events(
    request: Request,
    store: StoreDep,
    principal: StreamPrincipalDep,
    base: BaseUrlDep,
    project: Annotated[
        int | None,
        Query(
            ge=-DB_INT32_MAX - 1,
            le=DB_INT32_MAX,
            description="Project id; default: every project the key sees.",
        ),
    ] = None,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> StreamingResponse:
    if project is not None:
        visible = {
            row["id"] for row in store.auth.projects(principal.account_id, scope_of(principal).project_ids)
        }
        if project not in visible:
            raise NotFound(f"Project {project} not found.")
    stream = EventStream(
        _hub(request),
        scope_of(principal),
        project_id=project,
        resume=Cursor.parse(last_event_id_header or last_event_id),
    )
    return _response(stream, _presenter(principal, base))


def _hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.events
    return hub


Presenter = Callable[[Outgoing], dict[str, Any]]


def _presenter(principal: Principal, base: str) -> Presenter:
    permissions = ["view", "run", "cancel", "retry", "delete"] if principal.can_write else ["view"]

    def present(event: Outgoing) -> dict[str, Any]:
        row: RowMapping | None = event.row
        if event.kind == JOB and row is not None:
            return present_job(row, base, permissions=permissions)
        if event.kind == STATUS and row is not None:
            return {
                "id": row["id"],
                "job_id": row["job_id"],
                "created_at": isoformat(row["created_at"]),
                "from_status": row["from_status"],
                "to_status": row["to_status"],
                "cause": row["cause"],
            }
        if event.kind == LOG and row is not None:
            return {
                "id": row["id"],
                "job_id": row["job_id"],
                "created_at": isoformat(row["created_at"]),
                "level": row["level"],
                "message": row["message"],
                "line": format_log(row),
            }
        if event.kind == SHUTDOWN:
            return {"reason": "The server is shutting down; reconnect later with Last-Event-ID."}
        if event.kind == OVERFLOW:
            return {"reason": "This client fell behind; reconnect with Last-Event-ID to catch up."}
        return {}

    return present


def _response(stream: EventStream, present: Presenter) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        async for event in stream:
            if event is None:
                yield ": keep-alive\n\n"
                continue
            data = json.dumps(present(event), default=str, separators=(",", ":"))
            yield f"id: {event.cursor}\nevent: {event.kind}\ndata: {data}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
