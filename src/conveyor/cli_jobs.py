"""Job commands of the CLI (submit, jobs, show, logs, cancel, retry, run, delete, results, pipelines).

They talk to a running server only over HTTP, through :mod:`conveyor.client`, so they work
the same against a laptop and a cluster. Exit codes: 0 fine, 1 API or connection error
(message on stderr), 2 bad usage, 3 a waited-for job ended in another state than SUCCESS.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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
from rich.table import Table
from rich.text import Text

from conveyor.client import (
    DEFAULT_URL,
    ConveyorAPIError,
    ConveyorClient,
    ConveyorClientError,
    cursor_of,
    file_input,
    is_terminal,
    text_input,
)

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


class ExportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


# --------------------------------------------------------------------------- plumbing
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


# --------------------------------------------------------------------------- progress
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


def report_outcome(client: ConveyorClient, job: dict[str, Any], *, wait: bool, as_json: bool) -> None:
    """Shared tail of submit/run/retry/cancel: optionally wait, then print the outcome."""
    if wait and not is_terminal(job):
        job = watch(client, job)
    if as_json:
        print_json(job)
    elif wait or is_terminal(job):
        print_summary(job, failed_items(client, job))
    else:
        out.print(f"Job {job['id']} [bold]{escape(job['name'])}[/]: {styled(job['status'])}")
    if wait and job["status"] != "SUCCESS":
        raise typer.Exit(EXIT_JOB_NOT_SUCCESSFUL)


# --------------------------------------------------------------------------- submit
def collect_inputs(args: list[str]) -> tuple[list[dict[str, Any]], list[Path]]:
    """Inline inputs and files to upload, keeping the order of ``args``.

    Files (and the files of directories) are uploaded as multipart when they are all there is;
    mixed with texts (``-`` reads stdin lines; any other non-path is a text) they are sent
    inline as base64 so that the items keep the order they were given in.
    """
    inputs: list[dict[str, Any] | Path] = []
    for arg in args:
        if arg == "-":
            inputs.extend(text_input(line) for line in sys.stdin.read().splitlines() if line.strip())
            continue
        path = Path(arg)
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except (OSError, ValueError):  # too long or odd to be a path: it is a text
            is_file = is_dir = False
        if is_file:
            inputs.append(path)
        elif is_dir:
            inputs.extend(p for p in sorted(path.iterdir()) if p.is_file() and p.name[0] != ".")
        else:
            inputs.append(text_input(arg))
    files = [i for i in inputs if isinstance(i, Path)]
    if len(files) == len(inputs):
        return [], files
    return [file_input(i) if isinstance(i, Path) else i for i in inputs], []


def parse_config(pairs: list[str] | None, raw_json: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--config-json") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--config-json")
        config.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--config")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[key.strip()] = value
    return config


def submit(
    pipeline: Annotated[
        str, typer.Argument(help="Pipeline slug (see `conveyor pipelines`).", show_default=False)
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Inputs: a file path (named after the file), a directory (its files), `-` (one text "
            "per stdin line), or any other text. Files alone are uploaded (multipart, streamed from "
            "disk); mixed with texts they are sent inline as base64, in the order given.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name; default: pipeline and input count.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Show a progress bar until the job finishes.")
    ] = True,
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Queue at once, or leave CREATED for `conveyor run`.")
    ] = True,
    delay: Annotated[float, typer.Option(help="Seconds of fake work in a delay stage (test jobs).")] = 0,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Milliseconds from queueing until TIMEDOUT.")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Ask the pipeline for explanations.")] = False,
    max_failed_ratio: Annotated[
        float | None, typer.Option(help="Share of items allowed to fail (server default 0.5).")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", "-c", help="Pipeline option key=value (repeatable); values are JSON when they parse."
        ),
    ] = None,
    config_json: Annotated[str | None, typer.Option(help="Pipeline options as one JSON object.")] = None,
    project: Annotated[int | None, typer.Option(help="Project id (see `conveyor projects`).")] = None,
    limit: Annotated[int | None, typer.Option(help="Process only the first N inputs.")] = None,
    shuffle: Annotated[bool, typer.Option(help="Process inputs in random order.")] = False,
    collection: Annotated[
        int | None,
        typer.Option(help="Run over this stored collection instead of INPUTS (see --method, --limit)."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="How --collection items are picked: all, first, random or last_and_random."),
    ] = None,
    stored_item: Annotated[
        int | None, typer.Option(help="Run over one stored collection item (its id) instead of INPUTS.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Submit a job of PIPELINE over inputs, and by default follow it with a progress bar.

    Examples: `conveyor submit digits images/`, `cat lines.txt | conveyor submit test-delay -`,
    `conveyor submit digits --collection 3 --method random --limit 10`.
    With --wait the exit code is 3 if the job ends in another state than SUCCESS.
    """
    options = parse_config(config, config_json)
    items, files = collect_inputs(inputs or [])
    with api_errors(), connect(url, key) as client:
        job = client.submit(
            pipeline,
            items,
            files=files,
            name=name,
            start_now=start,
            delay=delay,
            timeout_ms=timeout,
            explain=explain,
            max_failed_ratio=max_failed_ratio,
            config=options,
            project_id=project,
            limit=limit,
            shuffle=shuffle,
            collection_id=collection,
            method=method,
            source_image_single_id=stored_item,
        )
        if not as_json:
            items_text = f"{job['total']} item{'' if job['total'] == 1 else 's'}"
            err.print(f"Submitted job {job['id']} ({items_text}, {styled(job['status'])}).")
        report_outcome(client, job, wait=wait and start, as_json=as_json)


# --------------------------------------------------------------------------- history and detail
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option(
            help="State (SUCCESS, ...) or group: pending, terminated, timedout, all. Comma-separate."
        ),
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Pipeline slug or id.")] = None,
    project: Annotated[int | None, typer.Option(help="Project id.")] = None,
    search: Annotated[str | None, typer.Option(help="Substring of the job name.")] = None,
    submitted_by: Annotated[str | None, typer.Option(help="Public prefix of the submitting key.")] = None,
    ordering: Annotated[
        str, typer.Option(help="created_at, updated_at, status, duration, name or id; `-` for descending.")
    ] = "-created_at",
    limit: Annotated[int, typer.Option(help="Jobs per page.")] = 20,
    created_after: Annotated[str | None, typer.Option(help="ISO date or time, e.g. 2025-01-31.")] = None,
    created_before: Annotated[str | None, typer.Option(help="ISO date or time.")] = None,
    cursor: Annotated[str | None, typer.Option(help="Page cursor printed under the previous page.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the page as JSON: count, next, previous, results.")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Job history: a filtered, ordered page of jobs (newest first by default)."""
    with api_errors(), connect(url, key) as client:
        page = client.list_jobs(
            status=status,
            pipeline=pipeline,
            project=project,
            search=search,
            submitted_by=submitted_by,
            ordering=ordering,
            limit=limit,
            created_after=created_after,
            created_before=created_before,
            cursor=cursor,
        )
    if as_json:
        print_json(page)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "Name", "Pipeline", "Status", "Done", "Failed", "Created", "Elapsed"):
        table.add_column(
            column,
            justify="right" if column in ("ID", "Done", "Failed") else "left",
            no_wrap=column != "Name",
        )
    for job in page["results"]:
        table.add_row(
            str(job["id"]),
            escape(job["name"]),
            escape((job.get("pipeline") or {}).get("slug", "-")),
            styled(job["status"]),
            f"{job['completed'] + job['failed']}/{job['total']}",
            str(job["failed"]),
            fmt_time(job["created_at"]),
            fmt_ms(job.get("elapsed_time_ms")),
        )
    out.print(table)
    shown = len(page["results"])
    footer = f"{shown} of {page['count']} job(s)"
    next_cursor = cursor_of(page.get("next"))
    if next_cursor:
        footer += f"; next page: --cursor {next_cursor}"
    out.print(f"[dim]{footer}[/]", soft_wrap=True)


def show(job_id: JobIdArg, as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """One job: status, counters, stages, timings, configuration and its latest log lines."""
    with api_errors(), connect(url, key) as client:
        job = client.get_job(job_id)
        failures = [] if as_json else failed_items(client, job)
    if as_json:
        print_json(job)
        return
    print_summary(job, failures)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    pipeline = job.get("pipeline") or {}
    rows = [
        ("uuid", job["job_identifier"]),
        (
            "pipeline",
            f"{pipeline.get('slug', '-')} v{pipeline.get('version', '-')} (id {pipeline.get('id')})",
        ),
        ("project", f"{job['project']['name']} (id {job['project']['id']})"),
        ("submitted by", job.get("submitted_by") or "-"),
        ("progress", f"{job['progress']['summary']['progress']:.0%}"),
        ("created", fmt_time(job["created_at"])),
        ("submitted", fmt_time(job["submitted_at"])),
        ("started", fmt_time(job["started_at"])),
        ("finished", fmt_time(job["finished_at"])),
        ("timeout", fmt_ms(job["timeout"]) if job["timeout"] else "none"),
        ("max failed", f"{job['max_failed_ratio']:.0%}"),
        ("config", json.dumps(job["config"]) if job["config"] else "{}"),
    ]
    for label, value in rows:
        facts.add_row(label, escape(str(value)))
    out.print(facts)
    stages = Table(box=None, header_style="bold", title="stages", title_justify="left")
    for column in ("Stage", "Status", "Progress", "Params"):
        stages.add_column(column)
    for stage in job["progress"]["stages"]:
        params = ", ".join(f"{p.get('name')}={p.get('value')}" for p in stage["params"])
        stages.add_row(
            escape(stage["name"]), styled(stage["status"]), f"{stage['progress']:.0%}", escape(params)
        )
    out.print(stages)
    lines = job["progress"]["logs"][-10:]
    if lines:
        out.print("[bold]latest log lines[/]")
        for line in lines:
            out.print(escape(line), soft_wrap=True)


def logs(
    job_id: JobIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job is finished.")
    ] = False,
    level: Annotated[str | None, typer.Option(help="Minimum level: DEBUG, INFO, WARNING, ERROR.")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --follow.", hidden=True)] = 0.5,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Print a job's log, oldest first; with --follow, tail it until the job is finished."""
    with api_errors(), connect(url, key) as client:
        after = 0
        finished = False
        while True:
            # Look at the state before reading: a job seen finished has written its last line.
            if follow and not finished:
                finished = is_terminal(client.get_job(job_id))
            page = client.logs(job_id, after=after, level=level, limit=1000)
            for row in page["results"]:
                typer.echo(row["line"])
            after = page["last_id"]
            if page.get("next"):
                continue
            if not follow or finished:
                return
            try:
                time.sleep(poll)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None


# --------------------------------------------------------------------------- actions
WaitOpt = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Show a progress bar until the job finishes.")
]


def cancel(
    job_id: JobIdArg,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Cancel a job: REVOKED at once if nothing runs, else CANCELING until workers stop (seconds)."""
    with api_errors(), connect(url, key) as client:
        job = client.cancel(job_id)
        if wait and not is_terminal(job):
            job = client.wait(job_id)
        if as_json:
            print_json(job)
        elif is_terminal(job):
            print_summary(job, failed_items(client, job))
        else:
            out.print(f"Job {job_id}: {styled(job['status'])}")


def retry(
    job_id: JobIdArg,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Re-run only the failed items of a finished job."""
    with api_errors(), connect(url, key) as client:
        job = client.retry(job_id)
        report_outcome(client, job, wait=wait, as_json=as_json)


def run(
    job_id: JobIdArg,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Queue a job submitted with --no-start (CREATED)."""
    with api_errors(), connect(url, key) as client:
        job = client.run(job_id)
        report_outcome(client, job, wait=wait, as_json=as_json)


def delete(job_id: JobIdArg, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Delete a finished (or never run) job with its items and logs."""
    with api_errors(), connect(url, key) as client:
        client.delete(job_id)
    out.print(f"Deleted job {job_id}.")


def results(
    job_id: JobIdArg,
    format: Annotated[
        ExportFormat, typer.Option("--format", "-F", help="Export format.")
    ] = ExportFormat.json,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Export every finished item's result (job_id, item_id, seq, name, source, status, result, error,
    duration_ms), streamed."""
    with api_errors(), connect(url, key) as client:
        _emit(client.stream_results(job_id, format.value), output)
    if output is not None:
        err.print(f"Wrote results of job {job_id} to {output}.")


def export(
    job_ids: Annotated[list[int], typer.Argument(help="Jobs to export, in order.", show_default=False)],
    format: Annotated[ExportFormat, typer.Option("--format", "-F", help="Export format.")] = ExportFormat.csv,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the export job.")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Export several jobs' results into one file through a data_export job: queue it, follow its
    progress, then download the file (to stdout, or atomically to --output)."""
    with api_errors(), connect(url, key) as client:
        job = client.create_export(job_ids, format.value, name=name)
        err.print(f"Export job {job['id']} queued.")
        final = client.wait(job["id"])
        if final["status"] != "SUCCESS":
            print_summary(final, failed_items(client, final))
            raise typer.Exit(EXIT_JOB_NOT_SUCCESSFUL)
        _emit(client.stream_export(job["id"]), output)
    if output is not None:
        err.print(f"Wrote the export of job(s) {', '.join(map(str, job_ids))} to {output}.")


def _emit(chunks: Iterator[bytes], output: Path | None) -> None:
    if output is not None:
        _write_atomically(output, chunks)
        return
    try:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # `| head`: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_atomically(path: Path, chunks: Iterator[bytes]) -> None:
    """A failed export leaves no half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- catalog
def pipelines(as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Pipelines installed on the server."""
    with api_errors(), connect(url, key) as client:
        found = client.pipelines()
    if as_json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "Slug", "Version", "Inputs", "Batch", "Stages", "Description"):
        table.add_column(column)
    for p in found:
        table.add_row(
            str(p["id"]),
            escape(p["slug"]),
            str(p["version"]),
            ", ".join(p["input_kinds"]),
            str(p["batch_size"]),
            ", ".join(s["key"] for s in p["stages"]),
            escape(p["description"]),
        )
    out.print(table)


def projects(as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Projects this key can see (their ids go to `submit --project` and `jobs --project`)."""
    with api_errors(), connect(url, key) as client:
        found = client.projects()
    if as_json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "Slug", "Name", "Created"):
        table.add_column(column)
    for p in found:
        table.add_row(str(p["id"]), escape(p["slug"]), escape(p["name"]), fmt_time(p["created_at"]))
    out.print(table)


def demo(
    count: Annotated[
        int | None, typer.Option(help="How many held-out digit images to submit (default: all of them).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="Port for the demo server (0: any free port).")] = 0,
    data_dir: Annotated[
        Path, typer.Option(envvar="CONVEYOR_DATA_DIR", help="Data directory of the demo server.")
    ] = Path("conveyor-data"),
) -> None:
    """End-to-end demo: start a server, classify held-out handwritten digits, report accuracy.

    Starts `conveyor serve` on a free port, creates a key, submits a `digits` job over images
    the model never saw, follows it with a progress bar, prints accuracy, per-class counts and
    timings, then stops the server with SIGTERM. Exits 0 only if the job succeeded with an
    accuracy of at least 90% and the server stopped cleanly.
    """
    from conveyor.demo import run_demo

    raise typer.Exit(run_demo(count=count, workers=workers, port=port, data_dir=data_dir))


def demo_ml(
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="Port for the demo server (0: any free port).")] = 0,
    data_dir: Annotated[
        Path, typer.Option(envvar="CONVEYOR_DATA_DIR", help="Data directory of the demo server.")
    ] = Path("conveyor-data"),
) -> None:
    """ML demo: classify real photos bundled in installed packages with `imagenet-classifier`.

    Needs the conveyor[ml] extra. Starts `conveyor serve`, submits the photos with explain=true,
    prints top-1 labels, whether each known photo's class is in its top 5, the model load time and
    where thumbnails and saliency maps are served; saves them under DATA_DIR/demo-ml/. Exits 0
    only if the job succeeded, every known photo was recognised and the server stopped cleanly.
    """
    from conveyor.demo_ml import run_demo_ml

    raise typer.Exit(run_demo_ml(workers=workers, port=port, data_dir=data_dir))


def register(app: typer.Typer) -> None:
    """Attach the job commands to the main app."""
    app.command("submit")(submit)
    app.command("jobs")(list_jobs)
    app.command("show")(show)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
    app.command("retry")(retry)
    app.command("run")(run)
    app.command("delete")(delete)
    app.command("results")(results)
    app.command("export")(export)
    app.command("pipelines")(pipelines)
    app.command("projects")(projects)
    app.command("demo")(demo)
    app.command("demo-ml")(demo_ml)
