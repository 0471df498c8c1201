"""``/api/v2/collections/``: named sets of stored inputs in a project (thin routes)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import BaseUrlDep, DbId, JobsDep, PrincipalDep, SettingsDep, SmallId
from conveyor.api.routes.uploads import upload_limits
from conveyor.api.schemas.collections import (
    CollectionCreate,
    CollectionItemsAdd,
    CollectionOut,
    CollectionPage,
    ItemsAdded,
    StoredItemOut,
    StoredItemPage,
    present_collection,
    present_stored_item,
)
from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX
from conveyor.domain.access import Principal
from conveyor.errors import NotFound
from conveyor.inputs.upload import receive_upload
from conveyor.services.jobs import JobService

router = APIRouter(prefix="/api/v2/collections", tags=["collections"])

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "Files to store, one item each (named after the file's base name).",
                    }
                },
            }
        }
    },
}


def _permissions(principal: Principal) -> list[str]:
    return ["view", "update", "delete"] if principal.can_write else ["view"]


def _collection(jobs: JobService, principal: Principal, collection_id: int, base: str) -> dict[str, Any]:
    row = jobs.collections.get(principal, collection_id)
    return present_collection(row, base, _permissions(principal))


def _page_link(request: Request, **changes: Any) -> str:
    params = {**dict(request.query_params), **{k: str(v) for k, v in changes.items()}}
    return str(request.url.replace_query_params(**params))


@router.post("/", status_code=201, response_model=CollectionOut, summary="Create a collection")
def create_collection(
    body: CollectionCreate, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    project_id = jobs.resolve_project(principal, body.project_id)
    collection_id = jobs.collections.create(principal, body.name, project_id, body.description)
    return JSONResponse(_collection(jobs, principal, collection_id, base), status_code=201)


@router.get("/", response_model=CollectionPage, summary="Collections the key can see, newest first")
def list_collections(
    request: Request,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    settings: SettingsDep,
    project: Annotated[
        int | None, Query(ge=-DB_INT32_MAX - 1, le=DB_INT32_MAX, description="Project id.")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> JSONResponse:
    size = min(limit or settings.default_page_size, settings.max_page_size)
    count, rows = jobs.collections.page(principal, project_id=project, limit=size, offset=offset)
    permissions = _permissions(principal)
    return JSONResponse(
        {
            "count": count,
            "next": _page_link(request, offset=offset + size, limit=size) if offset + size < count else None,
            "previous": _page_link(request, offset=max(0, offset - size), limit=size) if offset else None,
            "results": [present_collection(r, base, permissions) for r in rows],
        }
    )


@router.get("/{collection_id}/", response_model=CollectionOut, summary="One collection with its item count")
def get_collection(
    collection_id: SmallId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    return JSONResponse(_collection(jobs, principal, collection_id, base))


@router.delete(
    "/{collection_id}/",
    status_code=204,
    summary="Delete a collection and its stored items",
    description="Refused with 409 while an unfinished job runs over the collection. The items' "
    "bytes are deleted from the blob store. Finished jobs keep their results, and their "
    "`source_image_collection` still names the deleted collection; their items referred to the "
    "stored items (no copy), so a retry, or a job over one stored item "
    "(`source_image_single_id`) that reaches a deleted item, fails that item with "
    "`input_unavailable`.",
)
def delete_collection(collection_id: SmallId, jobs: JobsDep, principal: PrincipalDep) -> Response:
    jobs.collections.delete(principal, collection_id)
    return Response(status_code=204)


@router.get(
    "/{collection_id}/items/", response_model=StoredItemPage, summary="The collection's items, oldest first"
)
def list_collection_items(
    request: Request,
    collection_id: SmallId,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=DB_INT_MAX, description="Return items with an id greater than this.")
    ] = 0,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> JSONResponse:
    size = min(limit or settings.default_page_size, settings.max_page_size)
    count, rows = jobs.collections.items(principal, collection_id, after_id=after, limit=size + 1)
    more, rows = len(rows) > size, rows[:size]
    return JSONResponse(
        {
            "count": count,
            "next": _page_link(request, after=rows[-1]["id"], limit=size) if more else None,
            "previous": None,
            "results": [present_stored_item(r, base) for r in rows],
        }
    )


@router.get("/{collection_id}/items/{item_id}/", response_model=StoredItemOut, summary="One stored item")
def get_collection_item(
    collection_id: SmallId, item_id: DbId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    row = jobs.collections.item(principal, item_id)
    if row["collection_id"] != collection_id:
        raise NotFound(f"Item {item_id} is not in collection {collection_id}.")
    return JSONResponse(present_stored_item(row, base))


@router.post(
    "/{collection_id}/items/",
    status_code=201,
    response_model=ItemsAdded,
    summary="Store inputs in the collection (text, base64, url, s3)",
    description="URL and S3 inputs are fetched now; every input is checked against the caps "
    "before any is stored, and all are stored in one transaction.",
)
def add_collection_items(
    collection_id: SmallId, body: CollectionItemsAdd, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    specs = cast("list[dict[str, Any]]", body.inputs)
    ids = jobs.collections.add(principal, collection_id, specs)
    collection = _collection(jobs, principal, collection_id, base)
    return JSONResponse({"added": len(ids), "ids": ids, "collection": collection}, status_code=201)


@router.post(
    "/{collection_id}/items/upload/",
    status_code=201,
    response_model=ItemsAdded,
    summary="Upload files into the collection (multipart)",
    description="Streamed to disk as they arrive, with the same caps as `POST /api/v2/jobs/upload/`; "
    "stored in one transaction once the whole body is checked.",
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_collection_items(
    request: Request,
    collection_id: SmallId,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    settings: SettingsDep,
) -> JSONResponse:
    await run_in_threadpool(jobs.collections.get, principal, collection_id)  # 404 before reading the body
    async with receive_upload(request, settings.data_dir / "tmp", upload_limits(settings)) as upload:
        ids = await run_in_threadpool(jobs.collections.add, principal, collection_id, [], upload.files)
    collection = await run_in_threadpool(_collection, jobs, principal, collection_id, base)
    return JSONResponse({"added": len(ids), "ids": ids, "collection": collection}, status_code=201)
