"""``conveyor services ...``: remote processing services (Antenna's protocol), over the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from conveyor.cli.common import (
    EXIT_API_ERROR,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    api_errors,
    connect,
    err,
    out,
    print_json,
    print_listing,
)
from conveyor.client import DEFAULT_URL, ConveyorClient

services_app = typer.Typer(
    help="Remote processing services: HTTP services speaking Antenna's protocol (/info, /livez, /readyz, "
    "/process) whose pipelines run as remote:<service>/<slug>. Registering needs an owner key.",
    no_args_is_help=True,
)
ServiceArg = Annotated[str, typer.Argument(help="The service's name or id.", show_default=False)]


def _find(client: ConveyorClient, name_or_id: str) -> dict[str, Any]:
    for service in client.processing_services():
        if service["name"] == name_or_id or str(service["id"]) == name_or_id:
            return service
    err.print(
        f"[red]Error[/]: no processing service named {escape(name_or_id)!r} (see `conveyor services list`)."
    )
    raise typer.Exit(EXIT_API_ERROR)


def _health(service: dict[str, Any]) -> str:
    if service["ready"]:
        return "[green]ready[/]"
    return "[yellow]live, not ready[/]" if service["live"] else "[red]down[/]"


def _print(service: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(service)
        return
    out.print(
        f"[bold]{escape(service['name'])}[/] (id {service['id']}) at {escape(service['endpoint_url'])}: "
        f"{_health(service)}"
    )
    if service["last_error"]:
        out.print(f"  last error: {escape(service['last_error'])}")
    for pipeline in service["pipelines"]:
        out.print(f"  {escape(pipeline['slug'])}  v{pipeline['version']}  {escape(pipeline['name'])}")


@services_app.command("add")
def add(
    endpoint_url: Annotated[str, typer.Argument(help="The service's base URL, e.g. http://10.0.0.5:2000.")],
    name: Annotated[
        str | None, typer.Option(help="Name in pipeline slugs (default: from the service's /info).")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Register a processing service: fetch its /info and list its pipelines as remote:<name>/<slug>."""
    with api_errors(), connect(url, key) as client:
        service = client.register_service(endpoint_url, name=name)
    _print(service, as_json)


@services_app.command("list")
def list_services(as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Processing services of the key's account, their pipelines and last health check."""
    print_listing(
        url,
        key,
        ConveyorClient.processing_services,
        as_json,
        ("ID", "Name", "Endpoint", "Health", "Pipelines", "Last error"),
        lambda s: (
            str(s["id"]),
            escape(s["name"]),
            escape(s["endpoint_url"]),
            _health(s),
            ", ".join(escape(p["slug"]) for p in s["pipelines"]),
            escape(s["last_error"] or ""),
        ),
    )


@services_app.command("check")
def check(
    service: ServiceArg, as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None
) -> None:
    """Check a service again (health and pipelines); new pipeline versions get registered."""
    with api_errors(), connect(url, key) as client:
        found = client.refresh_service(_find(client, service)["id"])
    _print(found, as_json)


@services_app.command("remove")
def remove(service: ServiceArg, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Forget a service: its pipelines take no new jobs (past jobs keep their results)."""
    with api_errors(), connect(url, key) as client:
        found = _find(client, service)
        client.remove_service(found["id"])
    out.print(f"Removed processing service {escape(found['name'])}.")
