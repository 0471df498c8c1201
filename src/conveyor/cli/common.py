"""What every command module of the CLI shares: the consoles, the common options, the exit codes,
turning client errors into one line on stderr, and the formatting of statuses, times and rates.

The client commands talk to a running server only over HTTP, through :mod:`conveyor.client`, so
they work the same against a laptop and a cluster. Exit codes: 0 fine, 1 API or connection error
(message on stderr), 2 bad usage, 3 a waited-for job ended in another state than SUCCESS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conveyor.client import ConveyorAPIError, ConveyorClient, ConveyorClientError
from conveyor.settings import Settings

EXIT_API_ERROR = 1
EXIT_JOB_NOT_SUCCESSFUL = 3
STATUS_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "TIMEDOUT": "red",
    "REVOKED": "yellow",
    "CANCELING": "yellow",
    "STARTED": "cyan",
    "RETRY": "cyan",
    "PENDING": "blue",
    "CREATED": "dim",
}

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

UrlOpt = Annotated[
    str, typer.Option("--url", envvar="CONVEYOR_URL", help="Server base URL.", show_default=True)
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="CONVEYOR_KEY",
        help="API key (create one with `conveyor keys create`).",
        show_default=False,
    ),
]
JobIdArg = Annotated[int, typer.Argument(help="The job's id.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON instead of text.")]
WaitOpt = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Show a progress bar until the job finishes.")
]


def load_settings() -> Settings:
    """The server-side settings (environment, .env) of the admin commands that use them."""
    return Settings()


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn client errors into one line on stderr and exit code 1, without a traceback."""
    try:
        yield
    except ConveyorAPIError as exc:
        err.print(f"[red]Error[/] ({exc.status} {escape(exc.code)}): {escape(exc.message)}", soft_wrap=True)
        raise typer.Exit(EXIT_API_ERROR) from None
    except ConveyorClientError as exc:
        err.print(f"[red]Error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_API_ERROR) from None


def connect(url: str, key: str | None) -> ConveyorClient:
    if not key:
        err.print("[red]Error[/]: no API key; pass --key or set CONVEYOR_KEY (see `conveyor keys create`).")
        raise typer.Exit(EXIT_API_ERROR)
    return ConveyorClient(url, key)


def styled(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{status}[/]"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{minutes:.0f}m {seconds:02.0f}s"


def fmt_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def items_per_second(job: dict[str, Any]) -> float | None:
    elapsed = job.get("elapsed_time_ms")
    done = job["completed"] + job["failed"]
    return done / (elapsed / 1000) if elapsed else None


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def print_listing(
    url: str,
    key: str | None,
    fetch: Callable[[ConveyorClient], list[dict[str, Any]]],
    as_json: bool,
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[str]],
) -> None:
    """Fetch a list from the server and print it: its JSON with --json, else a plain table of
    ``columns``, one ``row(entry)`` each."""
    with api_errors(), connect(url, key) as client:
        found = fetch(client)
    if as_json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for entry in found:
        table.add_row(*row(entry))
    out.print(table)
