"""Running Conveyor and looking after its database: ``conveyor version``, ``serve`` (the API with
local workers, embedded mode), ``worker`` (a Celery worker, distributed mode) and ``db``
(Alembic migrations)."""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import Annotated

import typer

from conveyor import __version__, logs
from conveyor.cli.common import load_settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def version() -> None:
    """Print Conveyor's version."""
    typer.echo(__version__)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Local worker processes (0: API only).")] = 2,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API and N local worker processes (embedded mode: SQLite in CONVEYOR_DATA_DIR by default).

    Migrations are applied at start. SIGTERM or Ctrl-C stops cleanly: workers finish their
    current batch, write it back, and re-queue what they had not started.
    """
    from conveyor.api import server
    from conveyor.api.app import create_app

    os.environ.setdefault("CONVEYOR_LOG_LEVEL", log_level.upper())
    # uvicorn writes its text access lines to stdout: one line at a time, not a block when stdout is
    # a pipe or file (they came late, or were lost with the process).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logs.configure(log_level)
    settings = load_settings()
    if workers > 0 and settings.media_base_url is None and settings.public_url is None:
        # Processing services fetch item images from this server: the local workers tell them where.
        reachable = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        reachable = f"[{reachable}]" if ":" in reachable and not reachable.startswith("[") else reachable
        settings = settings.model_copy(update={"media_base_url": f"http://{reachable}:{port}"})
    stopped_by: list[int] = []
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal; these handlers
    # receive it, so a clean shutdown exits with status 0 instead of dying from the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: stopped_by.append(number))
    server.run(
        create_app(settings, workers=workers),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    if stopped_by:
        typer.echo(f"Conveyor stopped cleanly ({signal.Signals(stopped_by[0]).name}).", err=True)


def worker(
    server: Annotated[
        str | None,
        typer.Option(
            help="Run as an HTTP worker of this Conveyor server (https://...): it leases work over the API "
            "with the key in CONVEYOR_KEY (a worker key), and needs no database or broker."
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Celery: worker processes (prefork pool; default: CPU count). HTTP worker (--server): "
            "threads leasing chunks side by side, sharing one process's models (default: 1)."
        ),
    ] = 0,
    pipelines: Annotated[
        str | None, typer.Option(help="Comma-separated pipeline slugs to run (default: every installed one).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="HTTP worker: its name, shown as the chunks' holder (default: host-pid)."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue to consume (default: CONVEYOR_QUEUE).")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a Celery worker with the Conveyor task set (distributed mode), or with --server an HTTP
    worker that talks only to the API.

    Celery: needs CONVEYOR_BROKER_URL (redis://... or amqp://...) and a shared CONVEYOR_DATABASE_URL
    (PostgreSQL); run `conveyor db upgrade` first. Start as many as you like, on any host.

    HTTP (--server URL): needs only CONVEYOR_KEY (create one with `conveyor keys create --role worker`)
    and a data directory of its own (CONVEYOR_DATA_DIR: models, temporary files). SIGTERM finishes the
    batch in flight, posts it, hands the rest back and exits 0; a refused key exits 3.
    """
    slugs = [slug.strip() for slug in (pipelines or "").split(",") if slug.strip()]
    os.environ.setdefault("CONVEYOR_LOG_LEVEL", loglevel.upper())
    settings = load_settings()
    if server is not None:
        key = os.environ.get("CONVEYOR_KEY", "").strip()
        if not key:
            typer.echo(
                "error: CONVEYOR_KEY is not set (create a key with `conveyor keys create --role worker`).",
                err=True,
            )
            raise typer.Exit(2)
        if not server.startswith(("http://", "https://")):
            typer.echo(f"error: --server must be an http(s):// URL, not {server!r}.", err=True)
            raise typer.Exit(2)
        from conveyor.worker import http_worker

        logs.configure(loglevel, process_name="http-worker")
        code = http_worker.run(
            server, key, settings=settings, pipelines=slugs, concurrency=concurrency or 1, name=name
        )
        raise typer.Exit(code)
    if not settings.broker_url:
        typer.echo("error: CONVEYOR_BROKER_URL is not set (e.g. redis://127.0.0.1:6379/0).", err=True)
        raise typer.Exit(2)
    if queue:
        settings = settings.model_copy(update={"queue": queue})
    from conveyor.worker.celery import run_worker

    run_worker(settings, concurrency=concurrency or os.cpu_count() or 1, pipelines=slugs, loglevel=loglevel)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from conveyor.store import migrate

    settings = load_settings()
    if settings.database_url is None:
        settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {migrate.current(settings.resolved_database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from conveyor.store import migrate

    typer.echo(migrate.current(load_settings().resolved_database_url) or "empty")
