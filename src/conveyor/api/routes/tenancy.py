"""``/api/v2/keys/`` and ``POST /api/v2/projects/``: what owner keys manage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import RowMapping

from conveyor.api.deps import BaseUrlDep, PrincipalDep, SettingsDep, SmallId, StoreDep
from conveyor.api.schemas.common import DB_INT_MAX
from conveyor.clock import isoformat
from conveyor.services.keys import KeyRequest, KeyService

router = APIRouter(prefix="/api/v2", tags=["tenancy"])
SLUG = r"^[a-z0-9][a-z0-9_-]{0,99}$"


def get_keys(store: StoreDep) -> KeyService:
    return KeyService(store)


KeysDep = Annotated[KeyService, Depends(get_keys)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="A label for the key.")
    role: Literal["owner", "member", "viewer", "worker"] = Field(
        default="member",
        description="owner: keys and projects; member: submit, cancel, retry; viewer: read; "
        "worker: only lease work and post results (`conveyor worker --server`).",
    )
    project: str | None = Field(default=None, description="Bind the key to this project (slug).")
    expires_in_days: float | None = Field(
        default=None, gt=0, le=36_500, description="The key stops working after this (at most 100 years)."
    )


class KeyOut(BaseModel):
    prefix: str = Field(description="Public part of the key (shown as `submittedBy`).")
    name: str
    role: str
    project: str | None
    created_at: str
    last_used_at: str | None = Field(description="Updated at most once a minute.")
    expires_at: str | None
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The full key `prefix.secret`. Shown once: only its hash is stored.")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG)
    name: str | None = Field(default=None, max_length=200)


def _key(row: RowMapping | dict[str, Any], projects: dict[int, str]) -> dict[str, Any]:
    return {
        "prefix": row["prefix"],
        "name": row["name"],
        "role": row["role"],
        "project": projects.get(row["project_id"]) if row["project_id"] is not None else None,
        "created_at": isoformat(row["created_at"]),
        "last_used_at": isoformat(row["last_used_at"]),
        "expires_at": isoformat(row["expires_at"]),
        "revoked_at": isoformat(row["revoked_at"]),
    }


@router.get(
    "/keys/", response_model=list[KeyOut], summary="API keys (owner keys; a bound owner sees its project's)"
)
def list_keys(keys: KeysDep, principal: PrincipalDep) -> JSONResponse:
    projects = keys.project_slugs(principal)
    return JSONResponse([_key(r, projects) for r in keys.list_keys(principal)])


@router.post("/keys/", status_code=201, response_model=KeyCreated, summary="Create an API key (owner keys)")
def create_key(body: KeyCreate, keys: KeysDep, principal: PrincipalDep) -> JSONResponse:
    new = keys.create(principal, KeyRequest(body.name, body.role, body.project, body.expires_in_days))
    row = next(r for r in keys.list_keys(principal) if r["prefix"] == new.prefix)
    return JSONResponse({**_key(row, keys.project_slugs(principal)), "key": new.token}, status_code=201)


@router.delete("/keys/{prefix}/", status_code=204, summary="Revoke an API key by its prefix (owner keys)")
def revoke_key(prefix: str, keys: KeysDep, principal: PrincipalDep) -> Response:
    keys.revoke(principal, prefix)
    return Response(status_code=204)


@router.post("/projects/", status_code=201, summary="Create a project (unbound owner keys)")
def create_project(
    body: ProjectCreate, keys: KeysDep, principal: PrincipalDep, base: BaseUrlDep
) -> JSONResponse:
    row = keys.create_project(principal, body.slug, body.name)
    return JSONResponse(
        {
            "id": row["id"],
            "details": f"{base}/api/v2/projects/{row['id']}/",
            "slug": row["slug"],
            "name": row["name"],
            "description": row["description"],
            "created_at": isoformat(row["created_at"]),
            "user_permissions": [],
        },
        status_code=201,
    )


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["owner", "member", "viewer", "worker"]


class MemberOut(BaseModel):
    prefix: str
    name: str
    role: str
    created_at: str


@router.get(
    "/projects/{project_id}/members/",
    response_model=list[MemberOut],
    summary="Keys with a role in the project (bound to it, or members of it); project owners",
)
def list_members(project_id: SmallId, keys: KeysDep, principal: PrincipalDep) -> JSONResponse:
    return JSONResponse(
        [
            {
                "prefix": r["prefix"],
                "name": r["name"],
                "role": r["role"],
                "created_at": isoformat(r["created_at"]),
            }
            for r in keys.members(principal, project_id)
        ]
    )


@router.put(
    "/projects/{project_id}/members/{prefix}/",
    status_code=204,
    summary="Give a project-bound key a role in this project too (project owners)",
)
def set_member(
    project_id: SmallId, prefix: str, body: MemberSet, keys: KeysDep, principal: PrincipalDep
) -> Response:
    keys.set_member(principal, project_id, prefix, body.role)
    return Response(status_code=204)


@router.delete(
    "/projects/{project_id}/members/{prefix}/",
    status_code=204,
    summary="End a key's membership (project owners)",
)
def remove_member(project_id: SmallId, prefix: str, keys: KeysDep, principal: PrincipalDep) -> Response:
    keys.remove_member(principal, project_id, prefix)
    return Response(status_code=204)


class AuditOut(BaseModel):
    id: int
    created_at: str
    actor: str = Field(description="Public prefix of the key that acted, or `cli`.")
    action: str = Field(
        description="key.create, key.revoke, project.create, member.set:<role>, "
        "member.remove, job.run, job.cancel, job.retry, job.delete."
    )
    target: str = Field(description="`key:<prefix>`, `project:<slug>` or `job:<jobIdentifier>`.")
    project_id: int | None


@router.get(
    "/audit/",
    response_model=list[AuditOut],
    summary="Audit trail of key, membership and job actions, oldest first (owner keys)",
    description="Page on with `after` = the last `id`. A project-bound owner sees its projects' rows.",
)
def list_audit(
    keys: KeysDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> JSONResponse:
    size = min(limit or settings.default_page_size, settings.max_page_size)
    return JSONResponse(
        [
            {
                "id": r["id"],
                "created_at": isoformat(r["created_at"]),
                "actor": r["actor"],
                "action": r["action"],
                "target": r["target"],
                "project_id": r["project_id"],
            }
            for r in keys.audit(principal, after=after, limit=size)
        ]
    )
