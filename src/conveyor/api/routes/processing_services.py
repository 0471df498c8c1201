"""``/api/v2/processing-services/``: remote services whose pipelines run as ``remote:<name>/<slug>``
(thin routes over services/processing.py), and the signed item-image URLs those services fetch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from conveyor import media
from conveyor.api.deps import BaseUrlDep, DbId, JobsDep, PrincipalDep, SmallId, StoreDep
from conveyor.api.schemas.processing import ProcessingServiceCreate, ProcessingServiceOut, present_service
from conveyor.errors import NotFound

router = APIRouter(prefix="/api/v2", tags=["processing services"])


@router.post(
    "/processing-services/",
    status_code=201,
    response_model=ProcessingServiceOut,
    summary="Register a processing service (account-wide owner key)",
    description="Fetches the service's `/info` (400 `input_unavailable` if it cannot be reached or is not a "
    "processing service; nothing is stored then) and checks `/livez` and `/readyz`. Each pipeline it lists "
    "becomes `remote:<name>/<slug>`, usable by every key of the account. The server calls the URL as given, "
    "private addresses included: processing services usually live on the same network.",
)
async def register_service(
    body: ProcessingServiceCreate, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    service_id = await run_in_threadpool(
        jobs.processing.register, principal, body.endpoint_url, body.name, body.description
    )
    return JSONResponse(present_service(jobs.processing.get(principal, service_id), base), status_code=201)


@router.get(
    "/processing-services/",
    response_model=list[ProcessingServiceOut],
    summary="Processing services of the key's account, with their pipelines and last health check",
)
def list_services(jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    return JSONResponse([present_service(r, base) for r in jobs.processing.list(principal)])


@router.get(
    "/processing-services/{service_id}/",
    response_model=ProcessingServiceOut,
    summary="One processing service",
)
def get_service(
    service_id: SmallId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    return JSONResponse(present_service(jobs.processing.get(principal, service_id), base))


@router.post(
    "/processing-services/{service_id}/refresh/",
    response_model=ProcessingServiceOut,
    summary="Check the service again: health, and its pipelines (new versions get registered)",
)
async def refresh_service(
    service_id: SmallId, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    await run_in_threadpool(jobs.processing.refresh, principal, service_id)
    return JSONResponse(present_service(jobs.processing.get(principal, service_id), base))


@router.delete(
    "/processing-services/{service_id}/",
    status_code=204,
    summary="Remove a processing service; its pipelines take no new jobs (past jobs keep their results)",
)
def remove_service(service_id: SmallId, jobs: JobsDep, principal: PrincipalDep) -> Response:
    jobs.processing.remove(principal, service_id)
    return Response(status_code=204)


@router.get(
    "/media/items/{item_id}",
    summary="An item's input bytes, for a processing service holding a signed URL (no API key)",
    description="Workers send processing services these URLs; they expire after CONVEYOR_MEDIA_URL_SECONDS. "
    "A wrong or expired signature is a 404, like a missing item.",
    response_class=Response,
    responses={200: {"content": {"image/*": {}, "application/octet-stream": {}}}},
)
def item_media(
    item_id: DbId,
    store: StoreDep,
    jobs: JobsDep,
    expires: Annotated[int, Query(ge=0, le=2**62, description="Expiry, Unix seconds.")],
    signature: Annotated[str, Query(min_length=1, max_length=128, description="HMAC-SHA256, hex.")],
) -> Response:
    secret = store.processing_services.secret(media.SECRET_NAME)
    # From the row, the blob store or the collection item it refers to (JobService.item_media).
    data = jobs.item_media(item_id) if media.is_valid(secret, item_id, expires, signature) else None
    if data is None:
        raise NotFound("Not found, or the link expired.")
    return Response(
        data, media_type=media.media_type(data), headers={"Cache-Control": "private, max-age=300"}
    )
