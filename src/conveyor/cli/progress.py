"""Following a job and saying how it went: the live progress bar (``watch``), the job summary,
and the one outcome report that submit, run, retry and cancel end with (the demos use the
bar and the summary too)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
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
    """Items per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        label = "- items/s" if speed is None else f"{speed:,.1f} items/s"
        return Text(label, style="progress.data.speed")


def watch(client: ConveyorClient, job: dict[str, Any], *, poll: float = 0.25) -> dict[str, Any]:
    """Show a live progress bar on stderr until the job is finished; return the final job.

    The bar counts finished items (completed + failed) of the total, with the rate, an ETA
    and the status. Ctrl-C stops watching (exit 130); the job keeps running on the server.
    """
    progress = Progress(
        TextColumn("[bold]#{task.fields[job_id]}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
    )

    def update(current: dict[str, Any]) -> None:
        total, done = current["total"], current["completed"] + current["failed"]
        if total == 0:  # a delay-only test job: show its overall progress instead
            total, done = 100, round(100 * current["progress"]["summary"]["progress"])
        status = styled(current["status"])
        if current["failed"]:
            status += f" [red]{current['failed']} failed[/]"
        # Once finished, the server's own figure beats rich's moving estimate.
        rate = items_per_second(current) if is_terminal(current) else None
        progress.update(task, total=total, completed=done, status=status, rate=rate)

    task = progress.add_task(
        "job", total=job["total"] or None, job_id=job["id"], status=styled(job["status"]), rate=None
    )
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
