"""How the executor turns a pipeline's batch (or its exception) into item outcomes."""

from __future__ import annotations

from pathlib import Path

from conveyor.domain.work import ItemInput
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.worker.executor import ChunkExecutor, _failure_warning


class Flaky(Pipeline):
    slug = "flaky"
    name = "Flaky"

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        if any(item.name == "explode" for item in batch):
            raise ValueError("model crashed")
        if any(item.name == "short" for item in batch):
            return [ItemResult.success(1)]  # one result for several items: a pipeline bug
        return [
            ItemResult.success({"n": len(i.data)}) if i.data else ItemResult.failure("empty") for i in batch
        ]


def items(*names: str) -> list[ItemInput]:
    return [ItemInput(i, i, name, "text", b"" if name == "empty" else b"xy") for i, name in enumerate(names)]


def executor(tmp_path: Path) -> ChunkExecutor:
    settings = Settings(data_dir=tmp_path)
    return ChunkExecutor(Store(settings), settings, worker_name="test")


def test_results_map_to_outcomes_in_order(tmp_path: Path) -> None:
    ctx = BatchContext(config={}, explain=False, data_dir=tmp_path)
    outcomes = executor(tmp_path)._process(Flaky(tmp_path), items("a", "empty", "b"), ctx)
    assert outcomes is not None
    assert [(o.ok, o.result, o.error) for o in outcomes] == [
        (True, {"n": 2}, None),
        (False, None, "empty"),
        (True, {"n": 2}, None),
    ]
    assert all(o.started_at is not None and o.finished_at is not None for o in outcomes)
    warning = _failure_warning(items("a", "empty", "b"), outcomes)
    assert (
        warning is not None
        and warning.level == "WARNING"
        and "1 item(s) failed: empty: empty" in warning.message
    )


def test_a_batch_that_raises_fails_every_item_with_the_error(tmp_path: Path) -> None:
    ctx = BatchContext(config={}, explain=False, data_dir=tmp_path)
    for names, message in (
        (("a", "explode"), "ValueError: model crashed"),
        (("short", "b"), "RuntimeError: pipeline returned 1 results for 2 items"),
    ):
        outcomes = executor(tmp_path)._process(Flaky(tmp_path), items(*names), ctx)
        assert outcomes is not None
        assert [(o.ok, o.error) for o in outcomes] == [(False, message)] * 2


def test_a_batch_interrupted_by_a_stop_keeps_nothing(tmp_path: Path) -> None:
    ctx = BatchContext(config={}, explain=False, data_dir=tmp_path, should_stop=lambda: True)
    assert executor(tmp_path)._process(Flaky(tmp_path), items("explode"), ctx) is None
