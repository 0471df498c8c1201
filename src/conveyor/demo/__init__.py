"""The demos: the whole product in one command each, on real data, on top of the CLI.

- :mod:`~conveyor.demo.digits`  ``conveyor demo``: held-out handwritten digits, scored for accuracy
- :mod:`~conveyor.demo.photos`  ``conveyor demo-ml``: real bundled photos through imagenet-classifier

Both start ``conveyor serve`` in a subprocess as a user would, through the one server harness
(:class:`conveyor.testing.ServerProcess`: free port, key, own session, SIGTERM stop), follow their
job over HTTP with the CLI's progress bar and summary, and exit 0 only if they succeeded and the
server stopped cleanly. What they share is here: :func:`with_demo_server` and :func:`outcome`.
Their commands are added to the ``conveyor`` app by :mod:`conveyor.__main__` (the CLI never
imports the demos).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from conveyor.cli.common import err
from conveyor.client import ConveyorClient, ConveyorClientError
from conveyor.testing import ServerProcess

READY_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60

# The options both demo commands take.
WorkersOpt = Annotated[int, typer.Option(help="Local worker processes.")]
PortOpt = Annotated[int, typer.Option(help="Port for the demo server (0: any free port).")]
DataDirOpt = Annotated[
    Path, typer.Option(envvar="CONVEYOR_DATA_DIR", help="Data directory of the demo server.")
]


def with_demo_server(
    what: str,
    run: Callable[[ConveyorClient], bool],
    *,
    data_dir: Path,
    port: int,
    workers: int,
    env: dict[str, str] | None = None,
) -> int:
    """Start a demo server, give ``run`` a client of it, stop the server; the exit code (0 only if
    ``run`` succeeded and the server stopped cleanly)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        data_dir,
        workers=workers,
        port=port,
        extra_env=env,
        key_name="demo",
        log_path=data_dir / "demo-server.log",
        ready_timeout=READY_TIMEOUT_SECONDS,
    )
    err.print(f"Conveyor {what}: data in {data_dir}, server log in {server.log_path}")
    succeeded = False
    try:
        server.start()  # in its own session: Ctrl-C reaches the demo, which then stops the server
        with ConveyorClient(server.url, server.key) as client:
            err.print(f"Server ready at {server.url} with {workers} worker(s).")
            succeeded = run(client)
    except (ConveyorClientError, RuntimeError, subprocess.SubprocessError) as exc:
        err.print(f"[red]Demo failed:[/] {escape(str(exc))}")
    finally:
        # A server that never started (its key could not be made) has nothing to stop.
        code = server.stop(timeout=STOP_TIMEOUT_SECONDS) if server.process is not None else 0
    return outcome(succeeded, code, what[:1].upper() + what[1:])


def outcome(succeeded: bool, stop_code: int | None, what: str) -> int:
    """Say how the server stopped; the demo's exit code (it needs success and a clean stop)."""
    if stop_code == 0:
        err.print("Server stopped cleanly (SIGTERM, exit code 0).")
    else:
        err.print(f"[red]The server did not stop cleanly[/] (exit code {stop_code}).")
        succeeded = False
    if not succeeded:
        err.print(f"[red]{what} did not succeed.[/]")
    return 0 if succeeded else 1
