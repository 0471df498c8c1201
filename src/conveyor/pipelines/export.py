"""The ``data-export`` pipeline behind ``data_export`` jobs: one item per source job, each writing
that job's finished results as a gzipped JSON Lines part stored beside the item.

It is not an installed pipeline (no entry point): users create exports through
``POST /api/v2/exports/``, which checks that the caller may read every source job; workers get
an instance bound to a ``JobReader`` (the store's job repository, handed over by
``ChunkExecutor``: pipelines never import the store). The parts are joined into one JSON,
JSON Lines or CSV file when the export is downloaded.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import RowMapping

from conveyor import exports
from conveyor.domain.artifacts import Artifact, ArtifactKind
from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline

SLUG = "data-export"
PAGE = 1000
PART_MEDIA_TYPE = "application/x-ndjson+gzip"


class JobReader(Protocol):
    """What an export reads of its source jobs."""

    def exists(self, job_id: int) -> bool: ...

    def finished_items(self, job_id: int, *, page: int = ...) -> Iterator[RowMapping]: ...


class ExportStopped(Exception):
    """The export job stopped (cancel, timeout, shutdown) in the middle of a part."""


class DataExport(Pipeline):
    slug = SLUG
    name = "Data export"
    description = "Writes the finished results of one or more jobs into one downloadable file."
    input_kinds = ("text",)
    stages = (StageDef("export", "Export"),)
    batch_size = 1

    def __init__(self, data_dir: Path, jobs: JobReader) -> None:
        super().__init__(data_dir)
        self.jobs = jobs

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        return [self._part(int(item.data.decode()), ctx) for item in batch]

    def _part(self, source_job: int, ctx: BatchContext) -> ItemResult:
        if not self.jobs.exists(source_job):
            return ItemResult.failure(f"job {source_job} no longer exists")
        buffer = io.BytesIO()
        count = 0  # rows written
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
            for count, item in enumerate(self.jobs.finished_items(source_job, page=PAGE), start=1):
                if count % PAGE == 0 and ctx.should_stop():
                    raise ExportStopped(f"stopped while exporting job {source_job}")
                out.write((json.dumps(exports.row(source_job, item)) + "\n").encode())
        data = buffer.getvalue()
        return ItemResult.success(
            {"job_id": source_job, "rows": count, "bytes": len(data)},
            artifacts=(Artifact(ArtifactKind.EXPORT, PART_MEDIA_TYPE, data),),
        )


def read_parts(parts: Iterator[bytes]) -> Iterator[dict[str, object]]:
    """The rows of stored parts, in order, one part decompressed at a time."""
    for part in parts:
        with gzip.GzipFile(fileobj=io.BytesIO(part)) as lines:
            for line in lines:
                yield json.loads(line)
