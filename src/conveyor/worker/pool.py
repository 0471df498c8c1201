"""The local supervisor: a pool of worker processes (``worker/process.py``), each in a slot.

A worker process that dies (even by ``kill -9``) is replaced in its slot; its chunk comes back
when its lease runs out. The pool wakes its workers through the pipe protocol of
``worker/wakeup.py``; ``dispatch/local.py`` is the Dispatcher that uses it. The share of the
host's cores each worker's model gets (``model_threads``) is decided here, for the Celery
worker's pool processes too.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import select
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

from conveyor.settings import Settings
from conveyor.worker import wakeup
from conveyor.worker.process import worker_main

log = logging.getLogger(__name__)
_ctx = mp.get_context("spawn")


def model_threads(settings: Settings, processes: int) -> int:
    """The CPU threads of each worker's model: the configured number, else this host's cores
    shared out among ``processes`` workers, so busy workers do not oversubscribe the CPU
    (threads spinning against each other)."""
    return settings.model_threads or max(1, (os.cpu_count() or 1) // max(1, processes))


@dataclass
class Slot:
    index: int
    process: SpawnProcess | None = None
    wake_reader: Connection | None = None
    wake_writer: Connection | None = None
    ready_pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    def close_pipe(self) -> None:
        for end in (self.wake_reader, self.wake_writer):
            if end is not None:
                end.close()
        self.wake_reader = self.wake_writer = None


class WorkerPool:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.slots = [Slot(i) for i in range(workers)]
        self._inbox_reader, self._inbox_writer = _ctx.Pipe(duplex=False)
        self._supervisor: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()

    def wake_all(self) -> None:
        for slot in self.slots:
            writer = slot.wake_writer
            if writer is not None:
                wakeup.notify(writer.fileno())

    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self, slot: Slot) -> None:
        slot.close_pipe()
        slot.wake_reader, slot.wake_writer = _ctx.Pipe(duplex=False)
        os.set_blocking(slot.wake_writer.fileno(), False)
        slot.ready_pid = None
        process = _ctx.Process(
            target=worker_main,
            name=f"conveyor-worker-{slot.index}",
            args=(self._worker_settings(), slot.index, slot.wake_reader, self._inbox_writer),
            daemon=False,
        )
        process.start()
        slot.process = process
        slot.started_at = time.time()
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _worker_settings(self) -> dict[str, Any]:
        data = self.settings.model_dump(mode="json")
        data["model_threads"] = model_threads(self.settings, len(self.slots))
        return data

    def _supervise(self) -> None:
        inbox = self._inbox_reader.fileno()
        while not self._closing.is_set():
            readable, _, _ = select.select([inbox], [], [], 0.2)
            if readable:
                self._read_inbox(inbox)
            with self._lock:
                for slot in self.slots:
                    self._replace_if_dead(slot)

    def _read_inbox(self, inbox: int) -> None:
        wake = False
        for kind, index, pid in wakeup.read_messages(inbox):
            if kind == wakeup.READY and index < len(self.slots):
                self.slots[index].ready_pid = pid
            elif kind == wakeup.WAKE_ALL:
                wake = True
        if wake:
            self.wake_all()

    def _replace_if_dead(self, slot: Slot) -> None:
        process = slot.process
        if process is None or process.is_alive() or self._closing.is_set():
            return
        code = process.exitcode if process.exitcode is not None else -1
        slot.exit_codes.append(code)
        slot.restarts += 1
        log.warning(
            "worker %d (pid %s) exited with %s; starting a replacement", slot.index, process.pid, code
        )
        process.close()
        self._spawn(slot)
        self.wake_all()

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "slot": slot.index,
                    "pid": slot.process.pid if slot.process else None,
                    "alive": bool(slot.process and slot.process.is_alive()),
                    "ready": slot.process is not None and slot.ready_pid == slot.process.pid,
                    "started_at": slot.started_at,
                    "restarts": slot.restarts,
                    "exit_codes": list(slot.exit_codes),
                }
                for slot in self.slots
            ]

    def close(self, timeout: float = 30.0) -> None:
        """Graceful stop: workers finish their batch, write back, re-queue what is left, exit."""
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=2)
        with self._lock:
            processes = [slot.process for slot in self.slots if slot.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker's graceful stop
        deadline = time.monotonic() + timeout
        for slot, process in zip(self.slots, processes, strict=False):
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %d did not stop in %.0f s; killing it", slot.index, timeout)
                process.kill()
                process.join(timeout=5)
        for slot in self.slots:
            slot.close_pipe()
        self._inbox_reader.close()
        self._inbox_writer.close()
