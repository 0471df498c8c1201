"""The FastAPI application: wiring of store, services, dispatcher, sweeper and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.middleware.cors import CORSMiddleware

from conveyor import __version__
from conveyor.api import errors, security
from conveyor.api.request_ids import RequestIdMiddleware
from conveyor.api.routes import (
    artifacts,
    catalog,
    collections,
    events,
    exports,
    health,
    jobs,
    leases,
    metrics,
    modzy_jobs,
    modzy_models,
    processing_services,
    pull,
    tenancy,
    uploads,
)
from conveyor.api.routes import workers as worker_registry  # `workers` is create_app's pool size
from conveyor.dispatch.base import Dispatcher
from conveyor.dispatch.celery import CeleryDispatcher
from conveyor.dispatch.local import LocalDispatcher
from conveyor.services.artifacts import ArtifactService
from conveyor.services.bootstrap import prepare
from conveyor.services.events import EventHub
from conveyor.services.jobs import JobService
from conveyor.services.leases import LeaseService
from conveyor.services.metrics import ConveyorCollector, make_registry
from conveyor.services.sweeper import Sweeper
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.web import routes as web

log = logging.getLogger(__name__)

DESCRIPTION = """
Conveyor runs batch ML inference jobs: submit a pipeline over N inputs, watch every item,
stage and log line, cancel, run or retry, and page through a fast history.

Authenticate every call (except `/livez`, `/readyz` and these docs) with
`Authorization: Token <key>` (or `ApiKey <key>`); create keys with `conveyor keys create`.
Errors are JSON: `{"error": <code>, "message": <text>, "detail": {...}}`.

Two dialects: the native API under `/api/v2/` (tags jobs, catalog) and Modzy's job API under
`/api/` (tag modzy: `/api/jobs`, `/api/results`, `/api/models`), which the published `modzy-sdk`
client drives unmodified. Modzy-dialect errors use Modzy's shape:
`{"statusCode", "status", "message", "error", "detail"}`.
"""


def create_app(settings: Settings, *, workers: int = 0, run_sweeper: bool = True) -> FastAPI:
    store = Store(settings, pool_size=10)
    pool = LocalDispatcher(settings, workers) if workers > 0 else None
    dispatcher = _dispatcher(settings, pool)
    sweeper = Sweeper(
        store, dispatcher, period=settings.sweep_seconds, cancel_grace=settings.cancel_grace_seconds
    )
    hub = EventHub(store.changes, period=settings.events_poll_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        prepare(store)
        dispatcher.recover(store)  # chunks queued while no API server was publishing
        if pool is not None:
            pool.start()
        if run_sweeper:
            sweeper.start()
        await hub.start()
        log.info(
            "Conveyor %s ready: %s, %s dispatch, %d local worker(s)",
            __version__,
            store.db.dialect,
            dispatcher.mode,
            workers,
        )
        try:
            yield
        finally:
            log.info("shutting down: stopping workers (they re-queue unfinished chunks)")
            await hub.stop()
            sweeper.stop()
            if pool is not None:
                pool.close()
            if dispatcher is not pool:
                dispatcher.close()
            store.close()

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Native jobs API (`/api/v2/`, Antenna's dialect)."},
            {"name": "catalog", "description": "Pipelines and projects (`/api/v2/`)."},
            {
                "name": "tenancy",
                "description": "Owner keys manage API keys (list, create, revoke, expiry) and projects. "
                "Another account's objects are 404, never 403.",
            },
            {
                "name": "workers",
                "description": "HTTP workers (`conveyor worker --server URL`, a `worker` key) lease item "
                "chunks, renew them, post results and hand them back (`/api/v2/workers/leases/`).",
            },
            {
                "name": "modzy",
                "description": "Modzy's job API (`/api/`): jobs by `jobIdentifier`, chunked file inputs, "
                "history, results and models; camelCase fields, durations in ms.",
            },
        ],
    )
    app.state.settings = settings
    app.state.store = store
    app.state.jobs = JobService(store, dispatcher, settings)
    app.state.artifacts = ArtifactService(store)
    app.state.leases = LeaseService(store, settings)
    app.state.pool = pool
    app.state.sweeper = sweeper
    app.state.events = hub
    app.state.metrics = make_registry(
        ConveyorCollector(store, hub, lambda: pool.status() if pool is not None else [])
    )
    errors.install(app)

    @app.middleware("http")
    async def cap_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_request_bytes:
            return errors.error_response(
                request, 413, "too_large", f"Request body over the {settings.max_request_bytes}-byte cap."
            )
        return await call_next(request)

    app.include_router(health.router)
    # Early: a request is matched against every route included before its own, one by one, and a
    # Modzy job read (a hot poll) after all the native routers spent more on that than on its
    # query. Safe anywhere: no other router's paths start with /api/jobs or /api/results.
    app.include_router(modzy_jobs.router)
    app.include_router(pull.router)  # before jobs: /jobs/next/ is not a job id
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    app.include_router(leases.router)
    app.include_router(collections.router)
    app.include_router(processing_services.router)
    app.include_router(exports.router)
    app.include_router(catalog.router)
    app.include_router(modzy_models.router)
    app.include_router(tenancy.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    app.include_router(artifacts.router)
    app.include_router(worker_registry.router)
    app.include_router(web.router)
    app.mount("/static", web.static_files, name="static")
    errors.install_openapi(app)
    origins = security.cors_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=security.CORS_REQUEST_HEADERS,
            expose_headers=security.CORS_EXPOSED_HEADERS,
            allow_credentials=False,  # keys travel in the Authorization header, not in cookies
            max_age=600,
        )
    app.add_middleware(security.SecurityHeadersMiddleware)  # also on CORS preflights and 413s
    app.add_middleware(RequestIdMiddleware)  # outermost: the id covers the other middleware too
    return app


def _dispatcher(settings: Settings, pool: LocalDispatcher | None) -> Dispatcher:
    """Celery when a broker is configured (local workers, if any, also claim from the store)."""
    if settings.broker_url:
        return CeleryDispatcher(settings)
    return pool if pool is not None else LocalDispatcher(settings, 0)
