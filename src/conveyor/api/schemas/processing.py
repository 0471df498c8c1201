"""``/api/v2/processing-services`` schemas: remote services speaking Antenna's protocol."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import RowMapping

from conveyor.clock import isoformat
from conveyor.pipelines import remote


class ProcessingServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_url: str = Field(
        min_length=1,
        max_length=2000,
        description="The service's base URL; Conveyor calls `/info`, `/livez`, `/readyz` and `/process` "
        "under it.",
        examples=["http://10.0.0.5:2000"],
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="Lowercase letters, digits and dashes, unique on this server; its pipelines become "
        "`remote:<name>/<slug>`. Default: made from the name in the service's `/info`.",
    )
    description: str | None = Field(default=None, max_length=10_000, description="Default: from `/info`.")


class RemotePipelineOut(BaseModel):
    slug: str = Field(description="The pipeline's name in Conveyor: `remote:<service>/<slug>`.")
    service_slug: str = Field(description="The slug the service knows it by.")
    name: str
    description: str
    version: int
    version_name: str
    stages: list[dict[str, str]]
    algorithms: list[dict[str, Any]]


class ProcessingServiceOut(BaseModel):
    id: int
    details: str
    name: str
    endpoint_url: str
    description: str
    pipelines: list[RemotePipelineOut]
    live: bool = Field(description="`/livez` answered 2xx at the last check.")
    ready: bool = Field(description="`/readyz` answered 2xx at the last check.")
    latency_ms: int | None = Field(description="Time of the last health check.")
    last_error: str | None = Field(description="What went wrong at the last check, if anything.")
    last_checked_at: str | None
    created_at: str
    updated_at: str


def present_service(row: RowMapping, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "details": f"{base}/api/v2/processing-services/{row['id']}/",
        "name": row["name"],
        "endpoint_url": row["endpoint_url"],
        "description": row["description"],
        "pipelines": [
            {
                "slug": remote.remote_slug(row["name"], p["slug"]),
                "service_slug": p["slug"],
                "name": p["name"],
                "description": p["description"],
                "version": p["version"],
                "version_name": p["version_name"],
                "stages": p["stages"],
                "algorithms": p["algorithms"],
            }
            for p in row["info"]["pipelines"]
        ],
        "live": row["live"],
        "ready": row["ready"],
        "latency_ms": row["latency_ms"],
        "last_error": row["last_error"],
        "last_checked_at": isoformat(row["last_checked_at"]) if row["last_checked_at"] else None,
        "created_at": isoformat(row["created_at"]),
        "updated_at": isoformat(row["updated_at"]),
    }
