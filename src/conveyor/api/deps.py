"""FastAPI dependencies: the app's services and the authenticated principal.

They are ``async`` because they do no I/O (a key found in the principal cache costs no query):
FastAPI runs a plain ``def`` dependency in its thread pool, one thread hop per dependency per
request, which was a large share of a status read. Only a cache miss goes to a thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX
from conveyor.domain.access import Principal, lease_scope, refuse_worker_key
from conveyor.errors import Unauthenticated
from conveyor.services.jobs import JobService
from conveyor.settings import Settings
from conveyor.store import Store

SCHEMES = ("token", "apikey", "bearer")
#: Where worker keys are let in (``authenticate_worker``): the HTTP workers' leases and Antenna's
#: pull wire (registration, tasks, results, the next-job claim; the job list checks its query).
WORKER_ROUTES = "/api/v2/workers/leases/"
_PULL_ROUTES = re.compile(r"^/api/v2/(jobs/\d+/(tasks|result)/|jobs/next/|projects/\d+/pipelines/)$")


def is_worker_route(path: str) -> bool:
    """A route that worker keys may call (``authenticate_worker``)."""
    return path.startswith(WORKER_ROUTES) or _PULL_ROUTES.match(path) is not None


# Path ids within the database's integer bounds (schemas/common.py says which are 32-bit).
DbId = Annotated[int, Path(ge=-DB_INT_MAX, le=DB_INT_MAX)]
SmallId = Annotated[int, Path(ge=-DB_INT32_MAX - 1, le=DB_INT32_MAX)]


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_jobs(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def authenticate(request: Request) -> Principal:
    """The caller of every route but the worker routes: a worker key gets 403 here."""
    principal = await _principal(request)
    refuse_worker_key(principal)
    return principal


async def authenticate_worker(request: Request) -> Principal:
    """The caller of the worker routes (``/api/v2/workers/leases/``): a worker, member or owner
    key (a viewer key gets 403)."""
    principal = await _principal(request)
    lease_scope(principal)
    return principal


async def authenticate_any(request: Request) -> Principal:
    """Any valid key, worker keys included: for a route that decides itself (the job list lets a
    worker key poll Antenna's ``ids_only`` async_api list, nothing else)."""
    return await _principal(request)


async def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in SCHEMES or not token.strip():
        raise Unauthenticated("Send your API key as `Authorization: Token <key>` (or `ApiKey <key>`).")
    auth = request.app.state.store.auth
    principal = auth.cached(token)
    if principal is None:
        principal = await run_in_threadpool(auth.authenticate, token)
    request.state.principal = principal
    return principal


async def base_url(request: Request) -> str:
    return _base_url(request)


def _base_url(request: Request) -> str:
    configured = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


@dataclass(frozen=True, slots=True)
class JobReader:
    """What a job status read needs, from one dependency: FastAPI resolves each dependency
    separately (its own parameters, its own call), a measurable share of the hottest request."""

    request: Request
    jobs: JobService
    principal: Principal

    @property
    def base(self) -> str:
        """``base_url``, computed only by a read that shows links (the native detail)."""
        return _base_url(self.request)


async def job_reader(request: Request) -> JobReader:
    """The job service and the caller (``authenticate``: worker keys get 403)."""
    return JobReader(request, request.app.state.jobs, await authenticate(request))


StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
#: Worker routes: worker/member/owner keys (``authenticate_worker``).
WorkerPrincipalDep = Annotated[Principal, Depends(authenticate_worker)]
#: Any valid key; the route checks the role itself.
AnyPrincipalDep = Annotated[Principal, Depends(authenticate_any)]
BaseUrlDep = Annotated[str, Depends(base_url)]
#: The job status reads (native detail, Modzy job object): service, caller and base URL at once.
JobReaderDep = Annotated[JobReader, Depends(job_reader)]
