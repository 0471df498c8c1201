"""Job commands: submit, jobs (history), show, logs, and the actions cancel, retry, run, delete.

They talk to the server over HTTP (see :mod:`conveyor.cli.common` for the exit codes); the ones
that start or stop a job end with the shared outcome report of :mod:`conveyor.cli.progress`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from conveyor.cli.common import (
    JobIdArg,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    WaitOpt,
    api_errors,
    connect,
    err,
    fmt_ms,
    fmt_time,
    out,
    print_json,
    styled,
)
from conveyor.cli.progress import collect_view, failed_items, print_summary, report_outcome
from conveyor.client import (
    DEFAULT_URL,
    ConveyorClient,
    FetchMode,
    ManifestFormat,
    cursor_of,
    file_input,
    is_reference,
    is_terminal,
    manifest_file,
    manifest_input,
    reference_input,
    text_input,
)


class ManifestFormatChoice(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    text = "text"


class FetchChoice(StrEnum):
    by_reference = "by_reference"
    at_submit = "at_submit"


# --------------------------------------------------------------------------- submit
def collect_inputs(args: list[str]) -> tuple[list[dict[str, Any]], list[Path]]:
    """Inline inputs and files to upload, keeping the order of ``args``.

    ``http(s)://`` and ``s3://`` addresses are inputs by reference (``url``, ``s3``: an object, or
    every object under an ``s3://bucket/prefix/``). Files (and the files of directories) are
    uploaded as multipart when they are all there is; mixed with other inputs (``-`` reads
    stdin lines; any other non-path is a text) they are sent inline as base64 so that the
    items keep the order they were given in.
    """
    inputs: list[dict[str, Any] | Path] = []
    for arg in args:
        if arg == "-":
            inputs.extend(text_input(line) for line in sys.stdin.read().splitlines() if line.strip())
            continue
        if is_reference(arg):
            inputs.append(reference_input(arg))
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


def manifest_inputs(manifests: list[str], fmt: str | None) -> list[dict[str, Any]]:
    """``--manifest`` values: an ``http(s)://`` / ``s3://`` address is sent as the reference
    (listed by the job's collect stage); a local file is sent inline, as its text."""
    specs: list[dict[str, Any]] = []
    for manifest in manifests:
        if is_reference(manifest):
            specs.append(manifest_input(manifest, format=cast("ManifestFormat | None", fmt)))
            continue
        path = Path(manifest)
        if not path.is_file():
            raise typer.BadParameter(
                f"{manifest!r} is neither a file nor an http(s):// or s3:// address", param_hint="--manifest"
            )
        try:
            specs.append(manifest_file(path, format=cast("ManifestFormat | None", fmt)))
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{manifest!r} is not UTF-8 text", param_hint="--manifest") from None
    return specs


def _value(choice: StrEnum | None) -> str | None:
    return None if choice is None else str(choice.value)


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
            help="Inputs: an `http(s)://` URL or `s3://bucket/key` object (by reference), an "
            "`s3://bucket/prefix/` (every object under it, listed by the job's collect stage), a file "
            "path (named after the file), a directory (its files), `-` (one text per stdin line), or "
            "any other text. Files alone are uploaded (multipart, streamed from disk); mixed with "
            "other inputs they are sent inline as base64, in the order given.",
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        list[str] | None,
        typer.Option(
            "--manifest",
            help='A manifest of references (repeatable): JSONL `{"uri", "name"?}` lines, CSV with a '
            "`uri` column, or one URI a line. A local file is sent inline (its format from its "
            "suffix: .jsonl/.ndjson, .csv, .txt); an `http(s)://` or `s3://` address is sent as is "
            "and read by the job's collect stage.",
            show_default=False,
        ),
    ] = None,
    manifest_format: Annotated[
        ManifestFormatChoice | None,
        typer.Option("--format", help="The --manifest format; default: from its name, else its first line."),
    ] = None,
    fetch: Annotated[
        FetchChoice | None,
        typer.Option(
            help="by_reference (server default): URL/S3/manifest inputs are read by the workers, an "
            "unreadable one fails its item. at_submit: read during the request; one that cannot be "
            "read refuses the job (exit 1).",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="Write the results as sharded JSONL under this URI (`s3://bucket/prefix/` or "
            "`file:///dir/`) as items finish.",
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
    `conveyor submit imagenet-classifier s3://photos/2026/ --output s3://results/run-1/`,
    `conveyor submit imagenet-classifier --manifest list.jsonl`,
    `conveyor submit digits --collection 3 --method random --limit 10`.

    A job over S3 prefixes or manifest addresses first shows its collect stage (entries listed
    so far), then its items, whose total grows until listing ends.

    With --wait the exit code is 3 if the job ends in another state than SUCCESS.
    """
    options = parse_config(config, config_json)
    if manifest_format is not None and not manifest:
        raise typer.BadParameter("applies only with --manifest", param_hint="--format")
    items, files = collect_inputs(inputs or [])
    if manifest:
        items = [*items, *(file_input(f) for f in files), *manifest_inputs(manifest, _value(manifest_format))]
        files = []
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
            fetch=cast("FetchMode | None", _value(fetch)),
            output=output,
        )
        if not as_json:
            items_text = f"{job['total']} item{'' if job['total'] == 1 else 's'}"
            if collect_view(job) is not None:
                items_text += " so far; the collect stage lists the rest"
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
    output = job.get("output")
    if output:
        rows.append(("output", output.get("uri")))
        rows.append(
            ("output files", f"{output.get('shards') or 0} shard(s), {output.get('bytes') or 0:,} bytes")
        )
        if output.get("manifest"):
            rows.append(("output manifest", output["manifest"]))
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
def _job_action(
    act: Callable[[ConveyorClient, int], dict[str, Any]], doc: str, *, wanted: str | None = "SUCCESS"
) -> Callable[..., None]:
    """One command per job action (cancel, retry, run): call it, then the shared outcome report."""

    def command(
        job_id: JobIdArg,
        wait: WaitOpt = False,
        as_json: JsonOpt = False,
        url: UrlOpt = DEFAULT_URL,
        key: KeyOpt = None,
    ) -> None:
        with api_errors(), connect(url, key) as client:
            report_outcome(client, act(client, job_id), wait=wait, as_json=as_json, wanted=wanted)

    command.__name__ = command.__qualname__ = act.__name__
    command.__doc__ = doc
    return command


cancel = _job_action(
    ConveyorClient.cancel,
    "Cancel a job: REVOKED at once if nothing runs, else CANCELING until workers stop (seconds).",
    wanted=None,
)
retry = _job_action(ConveyorClient.retry, "Re-run only the failed items of a finished job.")
run = _job_action(ConveyorClient.run, "Queue a job submitted with --no-start (CREATED).")


def delete(job_id: JobIdArg, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Delete a finished (or never run) job with its items and logs."""
    with api_errors(), connect(url, key) as client:
        client.delete(job_id)
    out.print(f"Deleted job {job_id}.")
