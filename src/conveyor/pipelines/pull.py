"""Pipelines of pull processing services (Antenna's ADC worker): described here, run elsewhere.

A pull worker registers its pipelines in a project (``services/pull.py``); a job of one of them
is served as tasks the worker pulls, so no Conveyor worker ever runs this class. It validates
submissions (image inputs) and turns a worker's answer into an item result exactly like a
remote push service's answer (``pipelines/remote.py``: detections, their terminal labels).
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.pull import PullOutcome, pull_slug
from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.pipelines import remote
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline

MAX_ERROR_CHARS = 2000


class PullPipeline(Pipeline):
    """A pipeline a pull worker registered; ``process_batch`` is never called (no chunks)."""

    slug = "pull"
    name = "Pull pipeline"
    input_kinds = ("base64",)
    batch_size = 24
    image_classification_model = True

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        return [ItemResult.failure("this pipeline runs on pull workers (async_api), not here")] * len(batch)


def pipeline_class(project_id: int, registered: dict[str, Any]) -> type[PullPipeline]:
    attrs = {
        "slug": pull_slug(project_id, registered["slug"]),
        "name": registered["name"],
        "description": registered["description"],
        "version": registered["version"],
        "version_name": registered.get("version_name", ""),
        "stages": tuple(StageDef(s["key"], s["name"]) for s in registered["stages"]),
    }
    return type(f"Pull_{project_id}_{registered['slug']}", (PullPipeline,), attrs)


def describe(entry: Any) -> dict[str, Any]:
    """A registered pipeline (the ADC's PipelineConfigResponse) as stored; remote.parse_info's rules."""
    parsed = remote.parse_info({"pipelines": [entry]}, "the registration")["pipelines"][0]
    return dict(parsed)


def outcome(item_id: int, reply_subject: str, result: Any) -> PullOutcome:
    """One task's answer: a PipelineResultsResponse (stored like a push service's answer for the
    image) or ``{"error", "image_id"}`` (the item fails with the worker's message)."""
    if not isinstance(result, dict):
        return PullOutcome(item_id, reply_subject, False, error="the worker's result is not a JSON object")
    if "error" in result and "detections" not in result and "source_images" not in result:
        message = str(result.get("error") or "the worker reported an error")[:MAX_ERROR_CHARS]
        return PullOutcome(item_id, reply_subject, False, error=message)
    item = ItemInput(item_id, 0, "", "base64", b"")
    try:
        found = remote.results_of([item], result)[0]
    except remote.ServiceError as exc:
        return PullOutcome(item_id, reply_subject, False, error=str(exc))
    return PullOutcome(item_id, reply_subject, found.ok, result=found.value, error=found.error)
