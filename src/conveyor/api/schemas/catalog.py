"""Native ``/api/v2`` catalog schemas: pipelines and projects, and the pipeline presenter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import RowMapping

from conveyor.clock import isoformat


class PipelineOut(BaseModel):
    id: int
    details: str
    slug: str
    name: str
    description: str
    version: int
    version_name: str
    input_kinds: list[str]
    stages: list[dict[str, str]]
    image_classification_model: bool
    supports_explain: bool
    batch_size: int
    created_at: str
    updated_at: str
    user_permissions: list[str] = []


class ProjectOut(BaseModel):
    id: int
    details: str
    slug: str
    name: str
    description: str
    created_at: str
    user_permissions: list[str] = Field(
        default=[],
        description="What the calling key may do here: `view`, `submit` (member and owner keys), "
        "`manage` (owner keys: API keys).",
    )


def present_pipeline(row: RowMapping, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "details": f"{base}/api/v2/pipelines/{row['id']}/",
        "slug": row["slug"],
        "name": row["name"],
        "description": row["description"],
        "version": row["version"],
        "version_name": row["version_name"],
        "input_kinds": list(row["input_kinds"]),
        "stages": list(row["stages"]),
        "image_classification_model": row["image_classification_model"],
        "supports_explain": row["supports_explain"],
        "batch_size": row["batch_size"],
        "created_at": isoformat(row["created_at"]),
        "updated_at": isoformat(row["updated_at"]),
        "user_permissions": [],
    }
