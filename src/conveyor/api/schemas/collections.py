"""``/api/v2/collections`` schemas: collections of stored inputs and their items."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import RowMapping

from conveyor.api.schemas.common import InputIn, Page, SmallInt
from conveyor.clock import isoformat


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    project_id: SmallInt | None = Field(default=None, description="Default: the key's project or `default`.")
    description: str = Field(default="", max_length=10_000)


class CollectionItemsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[InputIn] = Field(
        min_length=1, description="Inputs to store: `text`, `base64`, `url` or `s3` (fetched now)."
    )


class CollectionOut(BaseModel):
    id: int
    details: str
    name: str
    description: str
    project: dict[str, Any]
    item_count: int
    byte_size: int = Field(description="Total bytes of the stored items.")
    created_at: str
    updated_at: str
    user_permissions: list[str] = []


class CollectionPage(Page):
    results: list[CollectionOut]


class StoredItemOut(BaseModel):
    id: int
    details: str
    collection_id: int
    name: str
    kind: str = Field(description="`text` or `base64` (raw bytes).")
    byte_size: int
    source: str | None = Field(
        description="The URL, `s3://…` or `upload:<file>` it came from; null if inline."
    )
    created_at: str


class StoredItemPage(Page):
    results: list[StoredItemOut]


class ItemsAdded(BaseModel):
    added: int
    ids: list[int] = Field(description="Ids of the new items (usable as `source_image_single_id`).")
    collection: CollectionOut


def present_collection(row: RowMapping, base: str, permissions: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "details": f"{base}/api/v2/collections/{row['id']}/",
        "name": row["name"],
        "description": row["description"],
        "project": {
            "id": row["project_id"],
            "name": row["project_name"],
            "details": f"{base}/api/v2/projects/{row['project_id']}/",
            "user_permissions": [],
        },
        "item_count": int(row["item_count"]),
        "byte_size": int(row["byte_size"]),
        "created_at": isoformat(row["created_at"]),
        "updated_at": isoformat(row["updated_at"]),
        "user_permissions": permissions,
    }


def present_stored_item(row: RowMapping, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "details": f"{base}/api/v2/collections/{row['collection_id']}/items/{row['id']}/",
        "collection_id": row["collection_id"],
        "name": row["name"],
        "kind": row["kind"],
        "byte_size": row["byte_size"],
        "source": row["source"],
        "created_at": isoformat(row["created_at"]),
    }
