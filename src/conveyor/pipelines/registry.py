"""Pipelines found through the ``conveyor.pipelines`` entry-point group, and warm instances."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from conveyor.errors import UnknownPipeline
from conveyor.pipelines.base import Pipeline

log = logging.getLogger(__name__)
GROUP = "conveyor.pipelines"


@lru_cache(maxsize=1)
def available() -> dict[str, type[Pipeline]]:
    """slug -> pipeline class, for every installed pipeline that imports cleanly."""
    found: dict[str, type[Pipeline]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # an optional extra may be missing; the others still work
            log.warning("pipeline %s could not be loaded: %s", ep.name, exc)
            continue
        found[cls.slug] = cls
    return dict(sorted(found.items()))


def get(slug: str) -> type[Pipeline]:
    try:
        return available()[slug]
    except KeyError:
        raise UnknownPipeline(
            f"Unknown pipeline {slug!r}; installed: {', '.join(available()) or 'none'}.", pipeline=slug
        ) from None


class WarmPipelines:
    """A worker process's loaded pipelines, least recently used evicted past ``capacity``; each is
    made with the worker's CONVEYOR_DEVICE (the torch pipelines resolve it when they load)."""

    def __init__(self, data_dir: Path, capacity: int = 4, device: str = "auto") -> None:
        self.data_dir = data_dir
        self.capacity = capacity
        self.device = device
        self._loaded: OrderedDict[str, Pipeline] = OrderedDict()
        self.load_seconds: dict[str, float] = {}
        # An HTTP worker's threads share one process's models (worker/http_worker.py).
        self._lock = threading.Lock()

    def get(self, slug: str) -> tuple[Pipeline, float | None]:
        """The warm instance, and its load time in seconds if it was loaded by this call."""
        with self._lock:
            return self._get(slug)

    def _get(self, slug: str) -> tuple[Pipeline, float | None]:
        if slug in self._loaded:
            self._loaded.move_to_end(slug)
            return self._loaded[slug], None
        started = time.perf_counter()
        pipeline = get(slug)(self.data_dir, device=self.device)
        pipeline.load()
        elapsed = time.perf_counter() - started
        self._loaded[slug] = pipeline
        self.load_seconds[slug] = elapsed
        while len(self._loaded) > self.capacity:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("evicted warm pipeline %s", evicted)
        return pipeline, elapsed
