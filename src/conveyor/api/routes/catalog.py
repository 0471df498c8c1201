"""``/api/v2/pipelines/`` and ``/api/v2/projects/``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from conveyor.api.deps import BaseUrlDep, JobsDep, PrincipalDep, SmallId, StoreDep
from conveyor.api.schemas.catalog import PipelineOut, ProjectOut, present_pipeline
from conveyor.clock import isoformat
from conveyor.domain.access import WRITE_ROLES, Principal
from conveyor.domain.pull import PREFIX as PULL_PREFIX
from conveyor.errors import NotFound
from conveyor.pipelines import registry, remote

router = APIRouter(prefix="/api/v2", tags=["catalog"])


@router.get(
    "/pipelines/",
    response_model=list[PipelineOut],
    summary="Pipelines (models) installed on this server, the remote ones of the account's processing "
    "services (`remote:<service>/<slug>`) and the pull ones registered in its projects "
    "(`pull:<project>/<slug>`), every known version",
)
def list_pipelines(store: StoreDep, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    usable = (
        set(registry.available())
        | jobs.processing.visible_slugs(principal)
        | jobs.pull.visible_slugs(principal)
    )
    return JSONResponse([present_pipeline(r, base) for r in store.pipelines.all() if r["slug"] in usable])


@router.get("/pipelines/{pipeline_id}/", response_model=PipelineOut, summary="One pipeline version")
def get_pipeline(
    pipeline_id: SmallId, store: StoreDep, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    row = store.pipelines.by_id(pipeline_id)
    if remote.is_remote(row["slug"]) and row["slug"] not in jobs.processing.visible_slugs(principal):
        raise NotFound(f"Pipeline {pipeline_id} not found.", pipeline_id=pipeline_id)
    if row["slug"].startswith(PULL_PREFIX) and row["slug"] not in jobs.pull.visible_slugs(principal):
        raise NotFound(f"Pipeline {pipeline_id} not found.", pipeline_id=pipeline_id)
    return JSONResponse(present_pipeline(row, base))


def _project_permissions(role: str | None) -> list[str]:
    """What the calling key may do in the project: ``view``; ``submit`` (jobs); ``manage`` (keys)."""
    if role is None:
        return []
    return ["view", *(["submit"] if role in WRITE_ROLES else []), *(["manage"] if role == "owner" else [])]


def _projects(store: StoreDep, principal: Principal, base: str) -> list[dict[str, object]]:
    visible = principal.visible_projects()
    return [
        {
            "id": r["id"],
            "details": f"{base}/api/v2/projects/{r['id']}/",
            "slug": r["slug"],
            "name": r["name"],
            "description": r["description"],
            "created_at": isoformat(r["created_at"]),
            "user_permissions": _project_permissions(principal.role_in(r["id"])),
        }
        for r in store.auth.projects(principal.account_id, visible)
    ]


@router.get("/projects/", response_model=list[ProjectOut], summary="Projects this key can see")
def list_projects(store: StoreDep, principal: PrincipalDep, base: BaseUrlDep) -> JSONResponse:
    return JSONResponse(_projects(store, principal, base))


@router.get("/projects/{project_id}/", response_model=ProjectOut, summary="One project")
def get_project(
    project_id: SmallId, store: StoreDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    for project in _projects(store, principal, base):
        if project["id"] == project_id:
            return JSONResponse(project)
    raise NotFound(f"Project {project_id} not found.")
