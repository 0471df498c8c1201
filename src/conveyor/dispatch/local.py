"""Embedded dispatch: the local worker pool (``worker/pool.py``), woken through pipes.

Workers find work in the store; the dispatcher only wakes them, so a submission starts within
milliseconds instead of a polling period. Supervision (slots, restarts, the pipe protocol of
``worker/wakeup.py``) is the pool's; this module is only the Dispatcher on top of it.
"""

from __future__ import annotations

from typing import Any

from conveyor.dispatch.base import Dispatcher
from conveyor.settings import Settings
from conveyor.worker.pool import Slot, WorkerPool


class LocalDispatcher(Dispatcher):
    mode = "internal"

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.pool = WorkerPool(settings, workers)

    @property
    def slots(self) -> list[Slot]:
        return self.pool.slots

    def enqueue(self, chunk_ids: list[int]) -> None:
        self.pool.wake_all()

    def start(self) -> None:
        self.pool.start()

    def status(self) -> list[dict[str, Any]]:
        return self.pool.status()

    def close(self, timeout: float = 30.0) -> None:
        """Graceful stop: workers finish their batch, write back, re-queue what is left, exit."""
        self.pool.close(timeout)
