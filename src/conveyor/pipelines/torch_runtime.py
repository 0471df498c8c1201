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
