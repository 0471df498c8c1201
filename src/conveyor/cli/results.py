"""Getting results out: ``conveyor results`` streams one job's finished items, ``conveyor export``
runs a data_export job over several jobs and downloads its file. Both write to stdout or,
atomically, to --output (a failed download leaves no half file behind)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import EXIT_JOB_NOT_SUCCESSFUL, JobIdArg, KeyOpt, UrlOpt, api_errors, connect, err
from conveyor.cli.progress import failed_items, print_summary
from conveyor.client import DEFAULT_URL


class ExportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


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
