"""FastAPI dependencies: the app's services and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX
from conveyor.domain.access import Principal
from conveyor.errors import Unauthenticated
from conveyor.services.jobs import JobService
from conveyor.settings import Settings
from conveyor.store import Store

SCHEMES = ("token", "apikey", "bearer")

# Path ids within the database's integer bounds (schemas/common.py says which are 32-bit).
DbId = Annotated[int, Path(ge=-DB_INT_MAX, le=DB_INT_MAX)]
SmallId = Annotated[int, Path(ge=-DB_INT32_MAX - 1, le=DB_INT32_MAX)]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_jobs(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in SCHEMES or not token.strip():
        raise Unauthenticated("Send your API key as `Authorization: Token <key>` (or `ApiKey <key>`).")
    principal = request.app.state.store.auth.authenticate(token)
    request.state.principal = principal
    return principal


def base_url(request: Request) -> str:
    configured = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
BaseUrlDep = Annotated[str, Depends(base_url)]
