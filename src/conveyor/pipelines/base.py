"""The pipeline contract: a class that loads a model once and processes batches of items."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from conveyor.domain.artifacts import Artifact
from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.errors import InvalidInput
from conveyor.pipelines import torch_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemResult:
    """What a pipeline says about one item: a JSON-able ``value`` or an ``error`` message, and
    optionally small files stored beside it (a sample thumbnail, an explanation)."""

    ok: bool
    value: Any = None
    error: str | None = None
    artifacts: tuple[Artifact, ...] = ()

    @classmethod
    def success(cls, value: Any, artifacts: tuple[Artifact, ...] = ()) -> ItemResult:
        return cls(True, value=value, artifacts=artifacts)

    @classmethod
    def failure(cls, error: str) -> ItemResult:
        return cls(False, error=error)


@dataclass
class BatchContext:
    """Handed to ``process_batch``: the job's options and a way to notice cancellation."""

    config: dict[str, Any]
    explain: bool
    data_dir: Path
    should_stop: Callable[[], bool] = lambda: False
    logs: list[tuple[str, str]] = field(default_factory=list)

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))


class Pipeline(ABC):
    """Subclass, set the class attributes, implement ``process_batch``; register under the
    ``conveyor.pipelines`` entry-point group. One instance lives per worker process and is
    kept warm across chunks and jobs; ``load`` runs once, before its first batch."""

    slug: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1
    version_name: ClassVar[str] = ""
    input_kinds: ClassVar[tuple[str, ...]] = ("text", "base64")
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("process", "Process"),)
    batch_size: ClassVar[int] = 32
    image_classification_model: ClassVar[bool] = False
    supports_explain: ClassVar[bool] = False

    #: Default batch size per device kind (``cpu``, ``cuda``) of a model that runs where
    #: CONVEYOR_DEVICE says; ``batch_size`` when the kind is not listed. A job's
    #: ``config.batch_size`` overrides both.
    batch_sizes: ClassVar[dict[str, int]] = {}

    def __init__(self, data_dir: Path, device: str = "auto") -> None:
        self.data_dir = data_dir
        #: CONVEYOR_DEVICE as configured (``auto``, ``cpu``, ``cuda``, ``cuda:N``); a torch
        #: pipeline resolves it in ``load`` and sets ``device`` to where its model runs.
        self.requested_device = device
        self.device: str | None = None

    def load(self) -> None:  # noqa: B027 - optional hook: most pipelines load a model here
        """Load weights or train; called once per worker process."""

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check the job's ``config`` at submission; raise InvalidInput with a clear message."""
        batch_size = config.get("batch_size")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 100_000
        ):
            raise InvalidInput("config.batch_size must be an integer between 1 and 100000.")
        return config

    def effective_batch_size(self, config: dict[str, Any]) -> int:
        """The job's ``batch_size``, else this device kind's default, else the class's."""
        if config.get("batch_size"):
            return int(config["batch_size"])
        if self.device is not None:
            return int(self.batch_sizes.get(torch_runtime.device_kind(self.device), self.batch_size))
        return int(self.batch_size)

    @abstractmethod
    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        """Return one ItemResult per input, in order. Raising fails the whole batch."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "slug": cls.slug,
            "name": cls.name,
            "description": cls.description,
            "version": cls.version,
            "version_name": cls.version_name,
            "input_kinds": list(cls.input_kinds),
            "stages": [{"key": s.key, "name": s.name} for s in cls.stages],
            "image_classification_model": cls.image_classification_model,
            "supports_explain": cls.supports_explain,
            "batch_size": cls.batch_size,
        }
