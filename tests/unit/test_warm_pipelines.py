"""A worker's warm pipelines: loaded once, reused, the least recently used evicted past the
configured capacity (CONVEYOR_WARM_MODELS)."""

from __future__ import annotations

from pathlib import Path

from conveyor.pipelines.registry import WarmPipelines
from conveyor.settings import Settings
from conveyor.worker.executor import ChunkExecutor
from conveyor.worker.fetching import Fetcher
from conveyor.worker.lease_client import LeaseClient


def test_a_pipeline_loads_once_and_the_least_recently_used_is_evicted(tmp_path: Path) -> None:
    warm = WarmPipelines(tmp_path, capacity=1)
    first, loaded = warm.get("test-delay")
    assert loaded is not None and loaded >= 0
    again, loaded_again = warm.get("test-delay")
    assert again is first and loaded_again is None  # warm: same instance, no new load
    warm.get("digits")  # capacity 1: test-delay goes
    replacement, reloaded = warm.get("test-delay")
    assert replacement is not first and reloaded is not None


def test_the_capacity_comes_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, warm_models=3)
    client = LeaseClient("http://127.0.0.1:9", "key", pipelines=["digits"])  # an HTTP worker's: no store
    executor = ChunkExecutor(None, settings, worker_name="w", chunks=client, fetcher=Fetcher(settings))
    assert executor.warm.capacity == 3
    client.close()
