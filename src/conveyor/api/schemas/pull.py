"""Antenna's pull protocol (async_api) bodies, exactly as the ADC worker sends and reads them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.store.pull import MAX_BATCH


class PullRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")
    processing_service_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        examples=["AMI Data Companion"],
        description="Default (newer ADC workers send none): `client_info.hostname`, else the key's name.",
    )
    client_info: dict[str, Any] | None = Field(
        default=None, description="Anything about the worker (hostname, software, version, platform)."
    )
    pipelines: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The worker's PipelineConfigResponse list: `name`, `slug`, `version`, `description`, "
        "`algorithms`, `stages`.",
    )


class PullRegistered(BaseModel):
    pipelines_created: list[str]
    pipelines_updated: list[str]
    processing_service_id: int


class TasksRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    batch_size: int = Field(ge=1, le=MAX_BATCH, description="At most this many tasks (the ADC asks for 24).")
    client_info: dict[str, Any] | None = Field(
        default=None, description="Anything about the worker (hostname, software, version)."
    )


class PullTask(BaseModel):
    id: str
    image_id: str
    image_url: str = Field(description="Fetch with a plain GET, no key: the item's own URL or a signed one.")
    reply_subject: str = Field(description="Send the result under it; valid until the task is offered again.")


class TasksResponse(BaseModel):
    tasks: list[PullTask]


class TaskResult(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reply_subject: str = Field(max_length=200)
    result: Any = Field(description='A PipelineResultsResponse, or `{"error": "...", "image_id": "..."}`.')


class TaskResults(BaseModel):
    model_config = ConfigDict(extra="ignore")
    results: list[TaskResult] = Field(default_factory=list)


class TaskAck(BaseModel):
    reply_subject: str
    status: str = Field(description='Always "queued" (Antenna\'s word): every result is acknowledged.')
    task_id: str | None
    applied: bool = Field(
        description="Whether this result was written (false: repeated, late, forged, or the "
        "job is no longer running)."
    )


class ResultsAccepted(BaseModel):
    status: str
    job_id: int
    results_queued: int
    results_applied: int
    tasks: list[TaskAck]


class NextJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline_slugs: list[str] = Field(
        min_length=1, max_length=200, description="The slugs this worker serves."
    )
    batch_size: int = Field(default=0, ge=0, le=MAX_BATCH, description="Also reserve this many tasks of it.")
    client_info: dict[str, Any] | None = None


class NextJob(BaseModel):
    id: int
    pipeline_slug: str


class NextJobResponse(BaseModel):
    job: NextJob | None = Field(description="None when no async_api job of those pipelines has work left.")
    tasks: list[PullTask]
