"""What a server offers and who may use it: ``conveyor pipelines`` and ``conveyor projects`` (over
HTTP), and ``conveyor keys`` (create, list, revoke API keys straight in the server's database;
only a hash of each secret is stored)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from conveyor.cli.common import (
    JsonOpt,
    KeyOpt,
    UrlOpt,
    fmt_time,
    load_settings,
    print_listing,
)
from conveyor.client import DEFAULT_URL, ConveyorClient

keys_app = typer.Typer(help="API keys (only a hash of each secret is stored).", no_args_is_help=True)


def pipelines(as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Pipelines installed on the server."""
    print_listing(
        url,
        key,
        ConveyorClient.pipelines,
        as_json,
        ("ID", "Slug", "Version", "Inputs", "Batch", "Stages", "Description"),
        lambda p: (
            str(p["id"]),
            escape(p["slug"]),
            str(p["version"]),
            ", ".join(p["input_kinds"]),
            str(p["batch_size"]),
            ", ".join(s["key"] for s in p["stages"]),
            escape(p["description"]),
        ),
    )


def projects(as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Projects this key can see (their ids go to `submit --project` and `jobs --project`)."""
    print_listing(
        url,
        key,
        ConveyorClient.projects,
        as_json,
        ("ID", "Slug", "Name", "Created"),
        lambda p: (str(p["id"]), escape(p["slug"]), escape(p["name"]), fmt_time(p["created_at"])),
    )


def workers(
    kind: Annotated[str | None, typer.Option(help="Only this kind: local, celery, http or pull.")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state: active, idle, lost or stopped.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Every worker the key sees: the server's own (local, Celery) and the account's (HTTP, pull), with
    state (a worker silent for longer than a lease is `lost`), last report, current job and items done."""
    print_listing(
        url,
        key,
        lambda client: client.workers(kind=kind, state=state),
        as_json,
        ("Name", "Host", "Kind", "State", "Pipelines", "Last seen", "Job", "Items done"),
        lambda w: (
            escape(w["name"]),
            escape(w["host"]),
            w["kind"],
            w["state"].upper() if w["state"] == "lost" else w["state"],
            escape(", ".join(w["pipelines"])),
            fmt_time(w["last_seen_at"]),
            str(w["current_job_id"] or ""),
            str(w["items_done"]),
        ),
    )


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
        str,
        typer.Option(
            help="owner (keys, projects), member (submit, cancel, retry), viewer (read) or worker "
            "(only lease work and post results: `conveyor worker --server`)."
        ),
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

    store = Store(load_settings())
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

    store = Store(load_settings())
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

    store = Store(load_settings())
    try:
        account_id, _ = store.auth.ensure_account(account)
        store.auth.revoke_key(account_id, prefix)
        store.audit.record(account_id, "cli", "key.revoke", f"key:{prefix}")
    finally:
        store.close()
    typer.echo(f"revoked {prefix}")
