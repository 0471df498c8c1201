"""The ``conveyor`` command line: server and admin commands here, job commands in ``cli_jobs``."""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import Annotated, Any

import typer

from conveyor import __version__, logs
from conveyor.cli_jobs import register as register_job_commands
from conveyor.cli_services import services_app
from conveyor.settings import Settings

app = typer.Typer(
    help="Conveyor: batch ML inference jobs. Server, workers, and a client for the API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (only a hash of each secret is stored).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(services_app, name="services")


def _settings() -> Settings:
    return Settings()


@app.command()
def version() -> None:
    """Print Conveyor's version."""
    typer.echo(__version__)


@app.command()
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
    settings = _settings()
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


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(help="Worker processes (Celery prefork pool); default: CPU count.")
    ] = 0,
    pipelines: Annotated[
        str | None, typer.Option(help="Comma-separated pipeline slugs to run (default: all).")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue to consume (default: CONVEYOR_QUEUE).")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a Celery worker with the Conveyor task set (distributed mode).

    Needs CONVEYOR_BROKER_URL (redis://... or amqp://...) and a shared CONVEYOR_DATABASE_URL
    (PostgreSQL); run `conveyor db upgrade` first. Start as many as you like, on any host.
    """
    settings = _settings()
    if not settings.broker_url:
        typer.echo("error: CONVEYOR_BROKER_URL is not set (e.g. redis://127.0.0.1:6379/0).", err=True)
        raise typer.Exit(2)
    if queue:
        settings = settings.model_copy(update={"queue": queue})
    from conveyor.dispatch.celery_app import run_worker

    slugs = [slug.strip() for slug in (pipelines or "").split(",") if slug.strip()]
    os.environ.setdefault("CONVEYOR_LOG_LEVEL", loglevel.upper())
    run_worker(settings, concurrency=concurrency or os.cpu_count() or 1, pipelines=slugs, loglevel=loglevel)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from conveyor.store import migrate

    settings = _settings()
    if settings.database_url is None:
        settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {migrate.current(settings.resolved_database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from conveyor.store import migrate

    typer.echo(migrate.current(_settings().resolved_database_url) or "empty")


AccountOption = Annotated[
    str,
    typer.Option(help="Account (tenant) slug; created if new. Keys of one account never see another's data."),
]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key (Modzy's `user` history filter).")] = "cli",
    project: Annotated[
        str | None, typer.Option(help="Bind the key to this project slug (created if new).")
    ] = None,
    role: Annotated[
        str, typer.Option(help="owner (keys, projects), member (submit, cancel, retry) or viewer (read).")
    ] = "owner",
    account: AccountOption = "default",
    expires_days: Annotated[
        float | None, typer.Option(help="The key stops working after this many days.", min=0.001)
    ] = None,
) -> None:
    """Create an API key. The secret is printed once, alone on the last line of stdout."""
    from datetime import timedelta

    from conveyor.clock import utcnow
    from conveyor.services.bootstrap import prepare
    from conveyor.store import Store

    store = Store(_settings())
    try:
        prepare(store)
        account_id, _ = store.auth.ensure_account(account)
        project_id = store.auth.ensure_project(account_id, project) if project else None
        expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
        key = store.auth.create_key(
            account_id=account_id, name=name, role=role, project_id=project_id, expires_at=expires_at
        )
        store.audit.record(account_id, "cli", "key.create", f"key:{key.prefix}", project_id)
    finally:
        store.close()
    typer.echo(
        f"Created key {key.prefix} ({role}{', project ' + project if project else ''}"
        f"{', account ' + account if account != 'default' else ''}). "
        "Store it now; it cannot be shown again:"
    )
    typer.echo(key.token)


@keys_app.command("list")
def keys_list(account: AccountOption = "default") -> None:
    """List an account's keys: prefix, name, role, project, created, last used, expires, state.

    Only prefixes are shown: the secrets are not stored, only their SHA-256 hashes."""
    from conveyor.services.bootstrap import prepare
    from conveyor.store import Store

    store = Store(_settings())
    try:
        prepare(store)
        account_id, _ = store.auth.ensure_account(account)
        slugs = {r["id"]: r["slug"] for r in store.auth.projects(account_id, None)}

        def when(value: Any) -> str:
            return f"{value:%Y-%m-%d %H:%M}" if value else "-"

        typer.echo("prefix\tname\trole\tproject\tcreated\tlast used\texpires\tstate")
        for row in store.auth.list_keys(account_id):
            state = "revoked" if row["revoked_at"] else "active"
            typer.echo(
                f"{row['prefix']}\t{row['name']}\t{row['role']}\t{slugs.get(row['project_id'], '*')}\t"
                f"{when(row['created_at'])}\t{when(row['last_used_at'])}\t{when(row['expires_at'])}\t{state}"
            )
    finally:
        store.close()


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's public prefix.")],
    account: AccountOption = "default",
) -> None:
    """Revoke a key by its prefix; requests with it get 401 from then on."""
    from conveyor.store import Store

    store = Store(_settings())
    try:
        account_id, _ = store.auth.ensure_account(account)
        store.auth.revoke_key(account_id, prefix)
        store.audit.record(account_id, "cli", "key.revoke", f"key:{prefix}")
    finally:
        store.close()
    typer.echo(f"revoked {prefix}")


register_job_commands(app)
