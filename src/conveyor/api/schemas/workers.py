"""``/api/v2/workers/`` schemas: the worker registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from conveyor.clock import isoformat
from conveyor.domain.workers import WorkerKind, WorkerState
from conveyor.store.workers import WorkerRow


class WorkerOut(BaseModel):
    id: int
    kind: WorkerKind = Field(
        description="`local`: a process of the server's own pool; `celery`: a `conveyor worker` pool "
        "process; `http`: `conveyor worker --server URL`; `pull`: an Antenna worker on the async_api "
        "pull protocol."
    )
    name: str = Field(
        description="`<host>/local-<slot>`, `<celery node>/pool-<n>`, `--name`, or the "
        "pull worker's `client_info.hostname`."
    )
    host: str
    shared: bool = Field(
        description="A worker of the deployment itself (local, Celery), serving every "
        "account; false: one of this account's own workers."
    )
    pipelines: list[str] = Field(description="The pipeline slugs it serves.")
    state: WorkerState = Field(
        description="`active`: on a job; `idle`; `lost`: silent for longer than its lease (killed, cut "
        "off or hung; its work goes back to the queue); `stopped`: exited cleanly."
    )
    last_seen_at: str
    started_at: str
    current_job_id: int | None = Field(
        description="The job it works on; null when idle, or when that job is not visible to this key."
    )
    items_done: int = Field(description="Items it finished since it started (reported about once a second).")
    info: dict[str, Any] = Field(
        description="What the worker says about itself: pid, software, version, device, `client_info`."
    )


def present_worker(row: WorkerRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "host": row.host,
        "shared": row.account_id is None,
        "pipelines": row.pipelines,
        "state": row.state.value,
        "last_seen_at": isoformat(row.last_seen_at),
        "started_at": isoformat(row.started_at),
        "current_job_id": row.current_job_id,
        "items_done": row.items_done,
        "info": row.info,
    }
