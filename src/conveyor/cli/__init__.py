"""The ``conveyor`` command line (Typer): ``app`` and, in order, every command it has.

- :mod:`~conveyor.cli.server`   version, serve, worker, db (running Conveyor, migrations)
- :mod:`~conveyor.cli.jobs`     submit, jobs, show, logs, cancel, retry, run, delete
- :mod:`~conveyor.cli.results`  results, export
- :mod:`~conveyor.cli.catalog`  pipelines, projects, workers, keys
- :mod:`~conveyor.cli.services` services (remote processing services)
- :mod:`~conveyor.cli.common` and :mod:`~conveyor.cli.progress`: what they share (consoles,
  options, errors, formatting; the progress bar, the summary, the outcome report)

The demos sit one layer above and never here: :mod:`conveyor.__main__` (the console script and
``python -m conveyor``) adds ``demo`` and ``demo-ml`` from :mod:`conveyor.demo`.
"""

from __future__ import annotations

import typer

from conveyor.cli import catalog, jobs, results, server
from conveyor.cli.services import services_app

__all__ = ["app"]

app = typer.Typer(
    help="Conveyor: batch ML inference jobs. Server, workers, and a client for the API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(server.db_app, name="db")
app.add_typer(catalog.keys_app, name="keys")
app.add_typer(services_app, name="services")

app.command("version")(server.version)
app.command("serve")(server.serve)
app.command("worker")(server.worker)
app.command("submit")(jobs.submit)
app.command("jobs")(jobs.list_jobs)
app.command("show")(jobs.show)
app.command("logs")(jobs.logs)
app.command("cancel")(jobs.cancel)
app.command("retry")(jobs.retry)
app.command("run")(jobs.run)
app.command("delete")(jobs.delete)
app.command("results")(results.results)
app.command("export")(results.export)
app.command("pipelines")(catalog.pipelines)
app.command("projects")(catalog.projects)
app.command("workers")(catalog.workers)
