"""CONVEYOR_DEVICE: checked at start-up, resolved against torch when a model loads, and the batch
size that follows from the device kind. No test needs a GPU: torch's CUDA side is faked where the
resolution of a GPU machine is what is tested."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.domain.work import ItemInput
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline
from conveyor.pipelines.registry import WarmPipelines
from conveyor.pipelines.torch_runtime import DeviceUnavailable, device_kind, resolve_device
from conveyor.settings import Settings
from conveyor.worker.executor import ChunkExecutor
from conveyor.worker.lease_client import LeaseClient, MediaFetcher


def fake_torch(gpus: int) -> Any:
    """What ``resolve_device`` reads of torch, for a machine with ``gpus`` GPUs."""
    cuda = SimpleNamespace(is_available=lambda: gpus > 0, device_count=lambda: gpus, current_device=lambda: 0)
    return SimpleNamespace(cuda=cuda, version=SimpleNamespace(cuda="12.4" if gpus else None), __version__="x")


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1")]
)
def test_valid_values_are_normalised(value: str, expected: str) -> None:
    assert Settings(device=value).device == expected


@pytest.mark.parametrize("value", ["gpu", "cuda1", "cuda:", "cuda:-1", "mps", ""])
def test_a_bad_value_stops_the_settings_with_a_clear_message(value: str) -> None:
    with pytest.raises(ValidationError, match="CONVEYOR_DEVICE must be auto, cpu, cuda or cuda:N"):
        Settings(device=value)


def test_the_setting_comes_from_the_environment_and_defaults_to_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_DEVICE", raising=False)
    assert Settings().device == "auto"
    monkeypatch.setenv("CONVEYOR_DEVICE", "cuda:0")
    assert Settings().device == "cuda:0"


def test_the_real_torch_here_resolves_auto_and_cpu() -> None:
    torch = pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
    expected = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", torch) == expected
    assert resolve_device("cpu", torch) == "cpu"


def test_the_real_torch_here_refuses_cuda_when_it_has_none() -> None:
    torch = pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceUnavailable, match=r"CONVEYOR_DEVICE=cuda but torch .* sees no usable GPU"):
        resolve_device("cuda", torch)


def test_without_a_gpu_only_auto_falls_back_to_the_cpu() -> None:
    torch = fake_torch(gpus=0)
    assert resolve_device("auto", torch) == "cpu"
    for requested in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DeviceUnavailable, match="a CPU-only build"):
            resolve_device(requested, torch)


def test_on_a_two_gpu_machine() -> None:
    torch = fake_torch(gpus=2)
    assert resolve_device("auto", torch) == "cuda:0"
    assert resolve_device("cuda", torch) == "cuda:0"
    assert resolve_device("cuda:1", torch) == "cuda:1"
    assert resolve_device("cpu", torch) == "cpu"
    with pytest.raises(DeviceUnavailable, match=r"has 2 GPU\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2", torch)


class Sized(Pipeline):
    slug = "sized"
    name = "Sized"
    batch_size = 8
    batch_sizes = {"cpu": 16, "cuda": 64}

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        return [ItemResult.success(None) for _ in batch]


def test_the_batch_size_follows_the_device_kind_unless_the_job_sets_one(tmp_path: Path) -> None:
    pipeline = Sized(tmp_path, device="auto")
    assert pipeline.requested_device == "auto"
    assert pipeline.effective_batch_size({}) == 8  # not loaded on any device: the class's
    pipeline.device = "cpu"
    assert pipeline.effective_batch_size({}) == 16
    pipeline.device = "cuda:1"
    assert device_kind(pipeline.device) == "cuda"
    assert pipeline.effective_batch_size({}) == 64
    assert pipeline.effective_batch_size({"batch_size": 5}) == 5


def test_the_workers_pipelines_are_made_with_the_configured_device(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu")
    # An HTTP worker's executor (no store): its leases and fetches go to a server it never calls here.
    leases = LeaseClient("http://127.0.0.1:9", "key", pipelines=["test-delay"])
    try:
        executor = ChunkExecutor(
            None, settings, worker_name="w", chunks=leases, fetcher=MediaFetcher(settings, leases)
        )
        assert executor.warm.device == "cpu"
    finally:
        leases.http.close()
    pipeline, _ = WarmPipelines(tmp_path, device="cuda:1").get("test-delay")
    assert pipeline.requested_device == "cuda:1"
    assert pipeline.device is None  # not a torch model: it never resolves the device
