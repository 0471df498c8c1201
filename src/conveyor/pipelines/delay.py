"""``test-delay``: fake work for tests, demos and benchmarks of the machinery itself."""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.errors import InvalidInput
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline


class DelayPipeline(Pipeline):
    slug = "test-delay"
    name = "Test delay"
    description = (
        "Fake work: sleeps item_seconds per item and fails the items named in fail_names, or a "
        "deterministic fail_rate share of them. With item_seconds=0 it measures Conveyor's own overhead."
    )
    version = 1
    input_kinds = ("text", "base64")
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("process", "Process"),)
    batch_size = 1000

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        super().validate_config(config)
        seconds = config.get("item_seconds", 0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
            raise InvalidInput("config.item_seconds must be a number of seconds between 0 and 3600.")
        rate = config.get("fail_rate", 0)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise InvalidInput("config.fail_rate must be a number between 0 and 1.")
        names = config.get("fail_names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput("config.fail_names must be a list of item names.")
        return config

    def effective_batch_size(self, config: dict[str, Any]) -> int:
        # Slow items go one at a time so progress, cancel and timeouts stay responsive.
        if config.get("batch_size"):
            return int(config["batch_size"])
        return 1 if config.get("item_seconds", 0) > 0 else self.batch_size

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        seconds = float(ctx.config.get("item_seconds", 0))
        fail_rate = float(ctx.config.get("fail_rate", 0))
        fail_names = set(ctx.config.get("fail_names", ()))
        out: list[ItemResult] = []
        for item in batch:
            if seconds:
                _sleep(seconds, ctx)
            if item.name in fail_names or (fail_rate and _fraction(item.name) < fail_rate):
                out.append(ItemResult.failure(f"injected failure for item {item.name!r}"))
            else:
                out.append(ItemResult.success({"bytes": len(item.data)}))
        return out


def _fraction(name: str) -> float:
    """A stable pseudo-random number in [0, 1) per item name, so failure injection is repeatable."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _sleep(seconds: float, ctx: BatchContext) -> None:
    deadline = time.monotonic() + seconds
    while not ctx.should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
