"""Following a job and saying how it went: the live progress bar (``watch``), the job summary,
and the one outcome report that submit, run, retry and cancel end with (the demos use the
bar and the summary too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from conveyor.cli.common import (
    EXIT_JOB_NOT_SUCCESSFUL,
    err,
    fmt_ms,
    items_per_second,
    out,
    print_json,
    styled,
)
from conveyor.client import ConveyorClient, is_terminal


class _RateColumn(ProgressColumn):
    """Items (or entries listed) per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        unit = task.fields.get("unit", "items")
        label = f"- {unit}/s" if speed is None else f"{speed:,.1f} {unit}/s"
        return Text(label, style="progress.data.speed")


@dataclass(frozen=True)
class BarView:
    """What one progress bar shows: ``done`` of ``total`` (None: not known yet) and a status."""

    total: int | None
    done: int
    status: str


def collect_stage(job: dict[str, Any]) -> dict[str, Any] | None:
    """The job's ``collect`` stage (a job over S3 prefixes or manifests at an address), if any."""
    for stage in job.get("progress", {}).get("stages", []):
        if stage.get("key") == "collect":
            return dict(stage)
    return None


def stage_param(stage: dict[str, Any], name: str, default: Any = 0) -> Any:
    return next((p.get("value") for p in stage.get("params", []) if p.get("name") == name), default)


def collect_view(job: dict[str, Any]) -> BarView | None:
    """The collect bar: entries listed so far; its total is known only once listing has ended."""
    stage = collect_stage(job)
    if stage is None:
        return None
    listed = int(stage_param(stage, "entries_listed"))
    if stage["status"] == "SUCCESS":
        return BarView(listed, listed, f"[green]listed[/] {listed:,} entries")
    if stage["status"] in ("CREATED", "STARTED"):
        return BarView(None, listed, f"{styled(stage['status'])} listing, {listed:,} entries so far")
    return BarView(listed, listed, f"{styled(stage['status'])} after {listed:,} entries")


def items_view(job: dict[str, Any]) -> BarView:
    """The item bar: finished (completed + failed) of ``total``; while the collect stage lists,
    ``total`` is the entries listed so far and grows (None while nothing is listed yet)."""
    total, done = job["total"], job["completed"] + job["failed"]
    stage = collect_stage(job)
    listing = stage is not None and stage["status"] in ("CREATED", "STARTED")
    status = styled(job["status"])
    if job["failed"]:
        status += f" [red]{job['failed']} failed[/]"
    if listing:
        status += " [dim](total grows while listing)[/]"
        return BarView(total or None, done, status)
    if total == 0:  # a delay-only test job: show its overall progress instead
        return BarView(100, round(100 * job["progress"]["summary"]["progress"]), status)
    return BarView(total, done, status)


def watch(client: ConveyorClient, job: dict[str, Any], *, poll: float = 0.25) -> dict[str, Any]:
    """Show a live progress bar on stderr until the job is finished; return the final job.

    The bar counts finished items (completed + failed) of the total, with the rate, an ETA
    and the status. A job over S3 prefixes or manifests first shows a ``collect`` bar with the
    entries listed so far (its items are processed while it lists, and their total grows
    until listing ends). Ctrl-C stops watching (exit 130); the job keeps running on the server.
    """
    progress = Progress(
        TextColumn("[bold]#{task.fields[job_id]}[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
    )
    tasks: dict[str, TaskID] = {}

    def show(name: str, view: BarView, **fields: Any) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(
                name, total=view.total, job_id=job["id"], **{"rate": None, **fields}
            )
        progress.update(tasks[name], total=view.total, completed=view.done, status=view.status, **fields)

    def update(current: dict[str, Any]) -> None:
        listing = collect_view(current)
        if listing is not None:
            show("collect", listing, unit="entries")
        # Once finished, the server's own figure beats rich's moving estimate.
        rate = items_per_second(current) if is_terminal(current) else None
        show("items", items_view(current), unit="items", rate=rate)

    update(job)
    try:
        with progress:
            return client.wait(job["id"], on_update=update, poll=poll)
    except KeyboardInterrupt:
        err.print(
            f"Stopped watching; job {job['id']} keeps running "
            f"(`conveyor show {job['id']}`, `conveyor cancel {job['id']}`)."
        )
        raise typer.Exit(130) from None


def failed_items(client: ConveyorClient, job: dict[str, Any], limit: int = 5) -> list[dict[str, Any]]:
    if not job["failed"]:
        return []
    rows: list[dict[str, Any]] = client.items(job["id"], status="FAILURE", limit=limit)["results"]
    return rows


def print_summary(job: dict[str, Any], failures: list[dict[str, Any]] | None = None) -> None:
    pipeline = job.get("pipeline") or {}
    out.print(
        f"Job {job['id']} [bold]{escape(job['name'])}[/] ({escape(pipeline.get('slug', '?'))} "
        f"v{pipeline.get('version', '?')}): {styled(job['status'])}"
    )
    out.print(
        f"  items   {job['total']} total, {job['completed']} completed, {job['failed']} failed, "
        f"{job['canceled']} canceled"
    )
    rate = items_per_second(job)
    out.print(
        f"  timing  queue {fmt_ms(job.get('queue_time_ms'))}, elapsed {fmt_ms(job.get('elapsed_time_ms'))}"
        + (f", {rate:,.1f} items/s" if rate is not None else "")
    )
    listing = collect_view(job)
    if listing is not None:
        stage = collect_stage(job) or {}
        sources, declared = stage_param(stage, "sources"), stage_param(stage, "bytes_declared")
        out.print(
            f"  collect {styled(str(stage.get('status')))}: {listing.done:,} entries listed from "
            f"{sources} source(s), {declared:,} bytes declared"
        )
    output = job.get("output")
    if output:
        out.print(
            f"  output  {escape(str(output.get('uri')))}: {output.get('shards') or 0} shard(s), "
            f"{output.get('items') or 0} items, {output.get('bytes') or 0:,} bytes",
            soft_wrap=True,
        )
    for line in job["progress"]["errors"][-5:]:
        out.print(f"  [red]{escape(line)}[/]", soft_wrap=True)
    if failures:
        more = job["failed"] - len(failures)
        out.print(
            "  failed items" + (f" (first {len(failures)} of {job['failed']})" if more > 0 else "") + ":"
        )
        for item in failures:
            out.print(f"    {escape(item['name'])}: [red]{escape(item['error'] or '?')}[/]", soft_wrap=True)


def report_outcome(
    client: ConveyorClient,
    job: dict[str, Any],
    *,
    wait: bool,
    as_json: bool,
    wanted: str | None = "SUCCESS",
) -> None:
    """Shared tail of submit/run/retry/cancel: optionally wait, then print the outcome.

    With ``wait``, the exit code is 3 when the job ends in another state than ``wanted``
    (None: any end is fine, as for cancel, whose job may also finish before it stops).
    """
    if wait and not is_terminal(job):
        job = watch(client, job)
    if as_json:
        print_json(job)
    elif wait or is_terminal(job):
        print_summary(job, failed_items(client, job))
    else:
        out.print(f"Job {job['id']} [bold]{escape(job['name'])}[/]: {styled(job['status'])}")
    if wait and wanted is not None and job["status"] != wanted:
        raise typer.Exit(EXIT_JOB_NOT_SUCCESSFUL)
