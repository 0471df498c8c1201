"""Native ``/api/v2/jobs`` schemas (Antenna's snake_case job instance plus Modzy's counters and
timings): the submission body, the job, item, log and event shapes, and their presenters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import RowMapping

from conveyor.api.schemas.common import (
    DB_INT32_MAX,
    CollectionRef,
    InputIn,
    Page,
    PipelineRef,
    Ref,
    SmallInt,
    StoredItemRef,
)
from conveyor.clock import isoformat
from conveyor.domain.stages import StageDef, derive_stages, overall_progress
from conveyor.domain.status import JobStatus
from conveyor.domain.work import shown_source
from conveyor.inputs.upload import StagedFile
from conveyor.services.submission import InputSpec, JobRequest

JOB_TYPES = {"ml": "ML pipeline", "data_export": "Data export"}
# Log levels shown in `progress.errors` and `logs.stderr`.
PROBLEM_LEVELS = ("WARNING", "ERROR")


# --------------------------------------------------------------------------- requests
class OutputIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str = Field(
        min_length=1,
        max_length=2000,
        description="`s3://bucket/prefix/` (the server's S3 settings; the bucket is checked at submit) or "
        "`file:///dir/` (under the server's CONVEYOR_OUTPUT_FILE_ROOT).",
    )


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=500)
    project_id: SmallInt | None = Field(
        default=None, description="Project; default: the key's project or `default`."
    )
    pipeline: str | None = Field(default=None, description="Pipeline slug, e.g. `digits`.")
    pipeline_id: SmallInt | None = Field(default=None, description="Pipeline id (a specific version).")
    inputs: list[InputIn] = Field(default_factory=list)
    delay: float = Field(
        default=0, ge=0, le=86400, description="Seconds of fake work in a `delay` stage (test jobs)."
    )
    timeout: int | None = Field(
        default=None,
        ge=1,
        le=30 * 86400 * 1000,
        description="Milliseconds after queueing before the job becomes TIMEDOUT.",
    )
    explain: bool = False
    max_failed_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of items that may fail; past it the job stops early with FAILURE. Default 0.5.",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Pipeline options, e.g. `batch_size`.")
    limit: int | None = Field(
        default=None, ge=1, le=DB_INT32_MAX, description="Process only the first `limit` inputs."
    )
    shuffle: bool = Field(default=False, description="Process inputs in random order.")
    collection_id: SmallInt | None = Field(
        default=None,
        description="Run over a stored collection instead of given inputs (Antenna's "
        "`source_image_collection`); `limit` and `method` choose which of its items.",
    )
    method: Literal["all", "first", "random", "last_and_random"] = Field(
        default="all",
        description="How items are picked from the collection: `all` (oldest first; `limit` keeps "
        "the first ones), `first` (the first `limit`, default 1), `random` (`limit` at random), "
        "`last_and_random` (the newest, then random others up to `limit`).",
    )
    source_image_single_id: SmallInt | None = Field(
        default=None, description="Run over one stored collection item (Antenna's `source_image_single`)."
    )
    fetch: Literal["by_reference", "at_submit"] = Field(
        default="by_reference",
        description="`by_reference` (default): `url`, `s3` and manifest inputs are stored as references "
        "and each worker reads an item's bytes just before its model needs them; an input that cannot "
        "be read fails that item (`input_unavailable`), and the failure budget decides the job. "
        "`at_submit`: every URL/S3 input is read during the request, and one that cannot be read "
        "refuses the whole job with a 4xx (for small jobs that want it up front).",
    )
    output: OutputIn | None = Field(
        default=None,
        description="Where finished items are written as sharded JSONL: one `predictions-00001.jsonl`, "
        "... per chunk of items (a line per item: name, seq, item_id, source, status, result, error), "
        "each written whole, and a `manifest.json` listing the shards when the job ends.",
    )

    def to_request(self, files: list[StagedFile] | None = None) -> JobRequest:
        return JobRequest(
            files=files or [],
            name=self.name,
            inputs=cast("list[InputSpec]", self.inputs),
            pipeline=self.pipeline,
            pipeline_id=self.pipeline_id,
            project_id=self.project_id,
            delay=self.delay,
            timeout_ms=self.timeout,
            explain=self.explain,
            max_failed_ratio=self.max_failed_ratio,
            config=self.config,
            limit=self.limit,
            shuffle=self.shuffle,
            collection_id=self.collection_id,
            method=self.method,
            source_item_id=self.source_image_single_id,
            fetch=self.fetch,
            output=self.output.model_dump() if self.output is not None else None,
        )


# --------------------------------------------------------------------------- responses
class StageOut(BaseModel):
    status: str
    progress: float
    key: str
    name: str
    params: list[dict[str, Any]]


class Summary(BaseModel):
    status: str
    progress: float


class Progress(BaseModel):
    summary: Summary
    stages: list[StageOut]
    errors: list[str]
    logs: list[str]


class Logs(BaseModel):
    stdout: list[str]
    stderr: list[str]


class JobType(BaseModel):
    name: str
    key: str


class OutputOut(BaseModel):
    uri: str
    shards: int = Field(description="Shard files written so far.")
    items: int = Field(description="Item lines in those shards.")
    bytes: int
    manifest: str | None = Field(description="The manifest's uri, once the job has ended and it is written.")


class JobOut(BaseModel):
    """A job: every key of Antenna's job instance, plus Modzy's counters and timings."""

    id: int
    job_identifier: str = Field(description="The job's UUID (Modzy's `jobIdentifier`).")
    details: str
    name: str
    delay: float
    limit: int | None
    shuffle: bool
    project: Ref
    deployment: None
    source_image_collection: CollectionRef | None = Field(
        description="The collection the job ran over (with the sampling `method`), if any."
    )
    source_image_single: StoredItemRef | None = Field(description="The one stored item the job ran over.")
    pipeline: PipelineRef | None
    status: JobStatus
    created_at: str
    updated_at: str
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    duration: str | None = Field(description="Seconds from start to finish, as text (Antenna).")
    progress: Progress
    logs: Logs
    job_type: JobType
    data_export: dict[str, Any] | None = Field(
        description="For a `data_export` job: `format` and `file_url` (downloadable once it has succeeded)."
    )
    dispatch_mode: str
    result: Any
    user_permissions: list[str]
    total: int
    pending: int
    completed: int
    failed: int
    canceled: int
    queue_time_ms: int | None = Field(description="Submission to first work start, in ms.")
    elapsed_time_ms: int | None = Field(description="Start to finish, in ms.")
    timeout: int | None = Field(description="Timeout in ms; null means never.")
    explain: bool
    max_failed_ratio: float
    config: dict[str, Any]
    input_byte_amount: int
    image_classification_model: bool
    submitted_by: str | None = Field(description="Public prefix of the API key that submitted the job.")
    account: str
    output: OutputOut | None = Field(
        default=None, description="The job's output (sharded JSONL), if it named one."
    )


class JobPage(Page):
    count_exact: bool = Field(
        description="False when `count` is an estimate: more jobs match than "
        "CONVEYOR_HISTORY_EXACT_COUNT_LIMIT (default 1,000), and counting them all on every page "
        "would scan the history. Paging is unaffected: follow `next` until it is null."
    )
    results: list[JobOut]


class JobId(BaseModel):
    id: int
    pipeline_slug: str | None = Field(description="The slug a pull worker registered (or the installed one).")


class JobIdsPage(Page):
    """The ``ids_only`` page Antenna's pull workers poll."""

    count_exact: bool
    results: list[JobId]


class ItemOut(BaseModel):
    id: int
    seq: int
    name: str
    kind: str
    byte_size: int
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    result: Any
    error: str | None
    source: str | None = Field(
        default=None,
        description="Where the bytes came from: the URL, `s3://…`, `upload:<file>`, "
        "`collection:<id>/<item>`; null for inline inputs.",
    )


class ItemPage(Page):
    results: list[ItemOut]


class LogOut(BaseModel):
    id: int
    created_at: str
    level: str
    message: str


class LogPage(BaseModel):
    next: str | None
    last_id: int = Field(description="Pass as `after` to follow the log.")
    results: list[LogOut]


class EventOut(BaseModel):
    id: int
    created_at: str
    from_status: str | None
    to_status: str
    cause: str


class ActionOut(BaseModel):
    id: int
    status: JobStatus
    job: JobOut


# --------------------------------------------------------------------------- presenters
def format_log(row: Mapping[Any, Any]) -> str:
    stamp: datetime = row["created_at"]
    # ``YYYY-MM-DD HH:MM:SS`` (strftime's '%Y-%m-%d %H:%M:%S' for years 1000-9999), a few times
    # faster: a job detail formats each of its recent lines.
    return f"[{stamp.isoformat(' ', 'seconds')[:19]}] {row['level']} {row['message']}"


def present_job(
    row: Mapping[Any, Any],
    base: str,
    *,
    logs: Sequence[Mapping[Any, Any]] | None = None,
    permissions: list[str] | None = None,
) -> dict[str, Any]:
    status = JobStatus(row["status"])
    total, pending = row["total"], row["pending"]
    stage_defs = [StageDef(s["key"], s["name"]) for s in (row["pipeline_stages"] or [])]
    stages = derive_stages(
        status=status,
        pipeline_stages=stage_defs,
        delay=row["delay"],
        delay_progress=row["delay_progress"],
        total=total,
        done=total - pending,
        params=row["stage_params"] or {},
        collect=row.get("collect"),
    )
    lines = [format_log(r) for r in (logs or [])]
    errors = [line for line, r in zip(lines, logs or [], strict=True) if r["level"] in PROBLEM_LEVELS]
    duration = None
    if row["started_at"] is not None and row["finished_at"] is not None:
        duration = f"{(row['finished_at'] - row['started_at']).total_seconds():.6f}"
    pipeline = None
    if row["pipeline_id"] is not None:
        pipeline = {
            "id": row["pipeline_id"],
            "details": f"{base}/api/v2/pipelines/{row['pipeline_id']}/",
            "name": row["pipeline_name"],
            "slug": row["pipeline_slug"],
            "description": row["pipeline_description"],
            "version": row["pipeline_version"],
            "version_name": row["pipeline_version_name"],
            "created_at": isoformat(row["pipeline_created_at"]),
            "updated_at": isoformat(row["pipeline_updated_at"]),
            "user_permissions": [],
        }
    return {
        "id": row["id"],
        "job_identifier": row["uuid"],
        "details": f"{base}/api/v2/jobs/{row['id']}/",
        "name": row["name"],
        "delay": row["delay"],
        "limit": row["limit"],
        "shuffle": row["shuffle"],
        "project": {
            "id": row["project_id"],
            "name": row["project_name"],
            "details": f"{base}/api/v2/projects/{row['project_id']}/",
            "user_permissions": [],
        },
        "deployment": None,
        "source_image_collection": _collection_ref(row.get("source_collection"), base),
        "source_image_single": _item_ref(row.get("source_item"), base),
        "pipeline": pipeline,
        "status": status,
        "created_at": isoformat(row["created_at"]),
        "updated_at": isoformat(row["updated_at"]),
        "submitted_at": isoformat(row["submitted_at"]),
        "started_at": isoformat(row["started_at"]),
        "finished_at": isoformat(row["finished_at"]),
        "duration": duration,
        "progress": {
            "summary": {"status": status, "progress": overall_progress(stages)},
            "stages": [
                {"status": s.status, "progress": s.progress, "key": s.key, "name": s.name, "params": s.params}
                for s in stages
            ],
            "errors": errors,
            "logs": lines,
        },
        "logs": {
            "stdout": [
                line for line, r in zip(lines, logs or [], strict=True) if r["level"] not in PROBLEM_LEVELS
            ],
            "stderr": errors,
        },
        "job_type": {"name": JOB_TYPES.get(row["job_type"], row["job_type"]), "key": row["job_type"]},
        "data_export": (
            {"format": row["config"].get("format"), "file_url": f"{base}/api/v2/jobs/{row['id']}/export/"}
            if row["job_type"] == "data_export"
            else None
        ),
        "dispatch_mode": row["dispatch_mode"],
        "result": row["result"],
        "user_permissions": permissions or [],
        "total": total,
        "pending": pending,
        "completed": row["completed"],
        "failed": row["failed"],
        "canceled": row["canceled"],
        "queue_time_ms": row["queue_time_ms"],
        "elapsed_time_ms": row["elapsed_time_ms"],
        "timeout": row["timeout_ms"],
        "explain": row["explain"],
        "max_failed_ratio": row["max_failed_ratio"],
        "config": row["config"] or {},
        "input_byte_amount": row["input_byte_amount"],
        "image_classification_model": bool(row["image_classification_model"]),
        "submitted_by": row["submitted_by"],
        "account": str(row["account_id"]),
        "output": present_output(row.get("output")),
    }


def present_output(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """The public part of ``jobs.output`` (not the manifest step's bookkeeping)."""
    if not output:
        return None
    return {
        "uri": output["uri"],
        "shards": int(output.get("shards", 0)),
        "items": int(output.get("items", 0)),
        "bytes": int(output.get("bytes", 0)),
        "manifest": output.get("manifest"),
    }


def present_item(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "seq": row["seq"],
        "name": row["name"],
        "kind": row["kind"],
        "byte_size": row["byte_size"],
        "status": row["status"],
        "attempts": row["attempts"],
        "started_at": isoformat(row["started_at"]),
        "finished_at": isoformat(row["finished_at"]),
        "duration_ms": row["duration_ms"],
        "result": row["result"],
        "error": row["error"],
        "source": shown_source(row.get("source"), row.get("ref")),
    }


def _collection_ref(snapshot: dict[str, Any] | None, base: str) -> dict[str, Any] | None:
    if not snapshot:
        return None
    return {
        "id": snapshot["id"],
        "name": snapshot["name"],
        "details": f"{base}/api/v2/collections/{snapshot['id']}/",
        "method": snapshot["method"],
        "user_permissions": [],
    }


def _item_ref(snapshot: dict[str, Any] | None, base: str) -> dict[str, Any] | None:
    if not snapshot:
        return None
    collection_id = snapshot["collection_id"]
    return {
        "id": snapshot["id"],
        "name": snapshot["name"],
        "details": f"{base}/api/v2/collections/{collection_id}/items/{snapshot['id']}/",
        "collection_id": collection_id,
        "user_permissions": [],
    }
