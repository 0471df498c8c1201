"""Stage progress of a job, derived from its counters and state (never stored twice)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.domain.status import TERMINAL, JobStatus


@dataclass(frozen=True)
class StageDef:
    key: str
    name: str


@dataclass
class Stage:
    key: str
    name: str
    status: str
    progress: float
    params: list[dict[str, Any]] = field(default_factory=list)


DELAY_STAGE = StageDef("delay", "Delay")
COLLECT_STAGE = StageDef("collect", "Collect")
RESULTS_STAGE = StageDef("results", "Results")


def _terminal_stage_status(job_status: JobStatus) -> str:
    return "SUCCESS" if job_status == JobStatus.SUCCESS else str(job_status)


def derive_stages(
    *,
    status: JobStatus,
    pipeline_stages: list[StageDef],
    delay: float,
    delay_progress: float,
    total: int,
    done: int,
    params: dict[str, list[dict[str, Any]]],
    collect: dict[str, Any] | None = None,
) -> list[Stage]:
    """Stage list: [delay] + [collect] + the pipeline's own stages + results.

    ``collect`` (a job over S3 prefixes or manifests) lists inputs while items are processed:
    STARTED until listing ends (its params count what was listed), then SUCCESS; its progress
    is 0 until then, since the length of a listing is not known before its end.

    The item-processing stages share the item progress; a stage is CREATED until work
    reaches it, STARTED while it runs, and takes the job's terminal state at the end.
    """
    stages: list[Stage] = []
    not_started = status in (JobStatus.CREATED, JobStatus.PENDING)
    finished = status in TERMINAL
    if delay > 0:
        if delay_progress >= 1.0:
            delay_status = "SUCCESS"
        elif finished:
            delay_status = _terminal_stage_status(status)
        else:
            delay_status = "CREATED" if not_started and delay_progress == 0 else "STARTED"
        stages.append(Stage(DELAY_STAGE.key, DELAY_STAGE.name, delay_status, round(delay_progress, 4)))
    if collect is not None:
        collected = bool(collect.get("done"))
        if collected:
            collect_status = "SUCCESS"
        elif finished:
            collect_status = _terminal_stage_status(status)
        else:
            collect_status = "CREATED" if not_started else "STARTED"
        stages.append(
            Stage(
                COLLECT_STAGE.key,
                COLLECT_STAGE.name,
                collect_status,
                1.0 if collected else 0.0,
                [
                    {"name": "sources", "value": len(collect.get("sources", []))},
                    {"name": "entries_listed", "value": int(collect.get("listed", 0))},
                    {"name": "bytes_declared", "value": int(collect.get("bytes", 0))},
                ],
            )
        )
    listing = collect is not None and not collect.get("done")
    items_progress = 1.0 if total == 0 else done / total
    if listing and not finished:
        items_progress = min(items_progress, 0.99)  # more items may still be listed
    delay_done = delay <= 0 or delay_progress >= 1.0
    for definition in pipeline_stages:
        if finished:
            stage_status = "SUCCESS" if items_progress >= 1.0 else _terminal_stage_status(status)
        elif not delay_done or (not_started and done == 0):
            stage_status = "CREATED"
        else:
            stage_status = "SUCCESS" if items_progress >= 1.0 else "STARTED"
        stages.append(Stage(definition.key, definition.name, stage_status, round(items_progress, 4)))
    results_status = _terminal_stage_status(status) if finished else ("STARTED" if done else "CREATED")
    stages.append(
        Stage(
            RESULTS_STAGE.key,
            RESULTS_STAGE.name,
            results_status,
            1.0 if finished else round(items_progress, 4),
        )
    )
    for stage in stages:
        stage.params = stage.params + list(params.get(stage.key, []))
    return stages


def overall_progress(stages: list[Stage]) -> float:
    if not stages:
        return 0.0
    return round(sum(s.progress for s in stages) / len(stages), 4)
