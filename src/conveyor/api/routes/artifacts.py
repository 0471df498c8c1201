"""``/api/v2/jobs/{id}/items/{item_id}/sample|explanation``: an item's stored files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from conveyor.api.deps import DbId, PrincipalDep
from conveyor.domain.artifacts import ArtifactKind
from conveyor.services.artifacts import ArtifactService

router = APIRouter(prefix="/api/v2/jobs", tags=["jobs"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job (in your scope) or item, or the item has no such file."}
}


def get_artifacts(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


ArtifactsDep = Annotated[ArtifactService, Depends(get_artifacts)]


def _file(
    artifacts: ArtifactService, principal: PrincipalDep, job_id: int, item_id: int, kind: ArtifactKind
) -> Response:
    found = artifacts.get(principal, job_id, item_id, kind)
    return Response(
        found.data,
        media_type=found.media_type,
        headers={"Cache-Control": "private, max-age=3600"},  # written once per item run
    )


@router.get(
    "/{job_id}/items/{item_id}/sample",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **NOT_FOUND},
    summary="The item's sample: a thumbnail (JPEG, at most 128 px) of an image input",
    description="Made for every readable image input of an image-classification pipeline "
    "(`image_classification_model`). `item_id` is the `id` from `GET /api/v2/jobs/{id}/items/`.",
)
def get_sample(job_id: DbId, item_id: DbId, artifacts: ArtifactsDep, principal: PrincipalDep) -> Response:
    return _file(artifacts, principal, job_id, item_id, ArtifactKind.SAMPLE)


@router.get(
    "/{job_id}/items/{item_id}/explanation",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **NOT_FOUND},
    summary="The item's explanation: a saliency map (greyscale PNG, brighter = more important)",
    description="Stored for each successful item of a job submitted with `explain=true` to a pipeline "
    "whose explanation is an image (`imagenet-classifier`). `text-embedding` puts its explanation "
    "(per-token importance) in the item's result instead.",
)
def get_explanation(
    job_id: DbId, item_id: DbId, artifacts: ArtifactsDep, principal: PrincipalDep
) -> Response:
    return _file(artifacts, principal, job_id, item_id, ArtifactKind.EXPLANATION)
