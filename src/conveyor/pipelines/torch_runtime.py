"""Shared set-up of PyTorch for the model pipelines (the ``conveyor[ml]`` extra). Nothing here
imports torch at import time: pipelines call ``import_torch`` in their ``load``, so the core (API,
CLI, other pipelines) runs where torch is not installed."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any

#: Set by ``use_model_threads`` in each worker process (its share: ``worker.pool.model_threads``).
THREADS_ENV = "CONVEYOR_MODEL_THREADS"


def missing(*modules: str) -> list[str]:
    """Which of these modules cannot be imported here (without importing them)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(name)
    return absent


def use_model_threads(threads: int) -> None:
    """Give the models loaded in this process (and its children) ``threads`` CPU threads."""
    os.environ[THREADS_ENV] = str(threads)


def model_threads() -> int:
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, os.cpu_count() or 1)


def import_torch() -> Any:
    """Import torch with this process's thread budget applied; a clear error if the extra is missing."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("this pipeline needs PyTorch: pip install 'conveyor[ml]'") from exc
    threads = model_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # allowed only before any parallel work ran
        torch.set_num_interop_threads(1)
    return torch


class DeviceUnavailable(RuntimeError):
    """CONVEYOR_DEVICE asks for a GPU this process cannot use. Raised by a model's ``load``, so the
    job's items fail with the reason instead of running, unnoticed, many times slower on the CPU."""


def resolve_device(requested: str, torch: Any) -> str:
    """``auto``/``cpu``/``cuda``/``cuda:N`` (already checked by the settings) -> the torch device a
    model goes to: ``cpu`` or ``cuda:N``. Only ``auto`` falls back to the CPU."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    if requested == "cpu":
        return "cpu"
    if not cuda:
        build = "a CPU-only build" if getattr(torch.version, "cuda", None) is None else "built with CUDA"
        raise DeviceUnavailable(
            f"CONVEYOR_DEVICE={requested} but torch {torch.__version__} ({build}) sees no usable GPU "
            "(torch.cuda.is_available() is False); set CONVEYOR_DEVICE=auto or cpu to run on the CPU"
        )
    index = int(requested.partition(":")[2] or torch.cuda.current_device())
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailable(
            f"CONVEYOR_DEVICE={requested} but this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}"
        )
    return f"cuda:{index}"


def device_kind(device: str | None) -> str:
    """``cpu`` or ``cuda``: what per-device defaults (batch sizes) are keyed by."""
    return "cuda" if device is not None and device.startswith("cuda") else "cpu"


def describe_device(device: str, torch: Any) -> str:
    """The device for logs and stage params: ``cpu``, or ``cuda:0 (NVIDIA L4)``."""
    if device_kind(device) != "cuda":
        return device
    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
