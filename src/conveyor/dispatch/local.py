"""Embedded dispatch: a supervised pool of local worker processes, woken by signals.

Workers find work in the store; the dispatcher only wakes them (one event per worker slot),
so a submission starts within milliseconds instead of a polling period. A worker process
that dies (even by ``kill -9``) is replaced in its slot; its chunk comes back when its lease
runs out.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from conveyor.dispatch.base import Dispatcher
from conveyor.settings import Settings

log = logging.getLogger(__name__)
_ctx = mp.get_context("spawn")


@dataclass
class Slot:
    index: int
    wake: MpEvent
    ready: MpEvent
    process: SpawnProcess | None = None
    started_at: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class LocalDispatcher(Dispatcher):
    mode = "internal"

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.stop_event: MpEvent = _ctx.Event()
        self.slots = [Slot(i, _ctx.Event(), _ctx.Event()) for i in range(workers)]
        self._supervisor: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ Dispatcher
    def enqueue(self, job_id: int, chunk_ids: list[int]) -> None:
        self.wake_all()

    def wake_all(self) -> None:
        for slot in self.slots:
            slot.wake.set()

    # ------------------------------------------------------------ supervision
    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self, slot: Slot) -> None:
        from conveyor.worker.process import worker_main

        wakes = [s.wake for s in self.slots]
        process = _ctx.Process(
            target=worker_main,
            name=f"conveyor-worker-{slot.index}",
            args=(
                self.settings.model_dump(mode="json"),
                slot.index,
                slot.wake,
                wakes,
                self.stop_event,
                slot.ready,
            ),
            daemon=False,
        )
        slot.ready.clear()
        process.start()
        slot.process = process
        slot.started_at = time.time()
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _supervise(self) -> None:
        while not self._closing.wait(0.2):
            with self._lock:
                for slot in self.slots:
                    process = slot.process
                    if process is not None and not process.is_alive() and not self._closing.is_set():
                        code = process.exitcode if process.exitcode is not None else -1
                        slot.exit_codes.append(code)
                        slot.restarts += 1
                        log.warning(
                            "worker %d (pid %s) exited with %s; starting a replacement",
                            slot.index,
                            process.pid,
                            code,
                        )
                        process.close()
                        self._spawn(slot)
                        slot.wake.set()

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "slot": slot.index,
                    "pid": slot.process.pid if slot.process else None,
                    "alive": bool(slot.process and slot.process.is_alive()),
                    "ready": slot.ready.is_set(),
                    "started_at": slot.started_at,
                    "restarts": slot.restarts,
                    "exit_codes": list(slot.exit_codes),
                }
                for slot in self.slots
            ]

    def close(self, timeout: float = 30.0) -> None:
        """Graceful stop: workers finish their batch, write back, re-queue what is left, exit."""
        self._closing.set()
        self.stop_event.set()
        self.wake_all()
        if self._supervisor is not None:
            self._supervisor.join(timeout=2)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.process is None:
                continue
            slot.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if slot.process.is_alive():
                log.error("worker %d did not stop in %.0f s; terminating it", slot.index, timeout)
                slot.process.terminate()
                slot.process.join(timeout=5)
