"""The FastAPI application: wiring of store, services, dispatcher, sweeper and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from conveyor import __version__
from conveyor.api import errors
from conveyor.api.routes import artifacts, catalog, health, jobs
from conveyor.dispatch.base import Dispatcher
from conveyor.dispatch.celery import CeleryDispatcher
from conveyor.dispatch.local import LocalDispatcher
from conveyor.services.artifacts import ArtifactService
from conveyor.services.bootstrap import prepare
from conveyor.services.jobs import JobService
from conveyor.services.sweeper import Sweeper
from conveyor.settings import Settings
from conveyor.store import Store

log = logging.getLogger(__name__)

DESCRIPTION = """
Conveyor runs batch ML inference jobs: submit a pipeline over N inputs, watch every item,
stage and log line, cancel, run or retry, and page through a fast history.

Authenticate every call (except `/livez`, `/readyz` and these docs) with
`Authorization: Token <key>` (or `ApiKey <key>`); create keys with `conveyor keys create`.
Errors are JSON: `{"error": <code>, "message": <text>, "detail": {...}}`.
"""


def create_app(settings: Settings, *, workers: int = 0, run_sweeper: bool = True) -> FastAPI:
    store = Store(settings, pool_size=10)
    pool = LocalDispatcher(settings, workers) if workers > 0 else None
    dispatcher = _dispatcher(settings, pool)
    sweeper = Sweeper(
        store, dispatcher, period=settings.sweep_seconds, cancel_grace=settings.cancel_grace_seconds
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        prepare(store)
        if isinstance(dispatcher, CeleryDispatcher):
            dispatcher.recover(store)  # chunks queued while no API server was publishing
        if pool is not None:
            pool.start()
        if run_sweeper:
            sweeper.start()
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
            sweeper.stop()
            if pool is not None:
                pool.close()
            if dispatcher is not pool:
                dispatcher.close()
            store.close()

    app = FastAPI(title="Conveyor", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.jobs = JobService(store, dispatcher, settings)
    app.state.artifacts = ArtifactService(store)
    app.state.pool = pool
    app.state.sweeper = sweeper
    errors.install(app)

    @app.middleware("http")
    async def cap_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_request_bytes:
            return JSONResponse(
                errors.error_body(
                    "too_large", f"Request body over the {settings.max_request_bytes}-byte cap."
                ),
                status_code=413,
            )
        return await call_next(request)

    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(catalog.router)
    app.include_router(artifacts.router)
    return app


def _dispatcher(settings: Settings, pool: LocalDispatcher | None) -> Dispatcher:
    """Celery when a broker is configured (local workers, if any, also claim from the store)."""
    if settings.broker_url:
        return CeleryDispatcher(settings)
    return pool if pool is not None else LocalDispatcher(settings, 0)
