"""Embedded dispatch: a supervised pool of local worker processes, woken through pipes.

Workers find work in the store; the dispatcher only wakes them, so a submission starts within
milliseconds instead of a polling period. A worker process that dies (even by ``kill -9``) is
replaced in its slot; its chunk comes back when its lease runs out.

Only pipes and signals cross process boundaries here, never ``multiprocessing.Event``: an
Event whose waiter is killed wedges the next ``set()`` forever, and ``kill -9`` of any worker
must leave the server fully working.
- parent -> worker: one pipe per worker process; a byte means "look for work".
- worker -> parent: one shared "inbox" pipe; small fixed-size messages (atomic writes) say
  "ready" or "wake everybody" (a delay stage released chunks).
- stop: SIGTERM to each worker; it finishes its batch, writes back, re-queues the rest.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import select
import struct
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

from conveyor.dispatch.base import Dispatcher
from conveyor.settings import Settings

log = logging.getLogger(__name__)
_ctx = mp.get_context("spawn")

#: Worker -> parent message: kind (1 byte), slot, pid.
MESSAGE = struct.Struct("!cHI")
READY = b"R"
WAKE_ALL = b"W"


def default_model_threads(processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def notify(fd: int) -> None:
    """Write one byte without ever blocking: a full pipe already holds a pending wake-up."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(fd, b"w")


def send(inbox: Connection, kind: bytes, slot: int) -> None:
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(inbox.fileno(), MESSAGE.pack(kind, slot, os.getpid()))


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


class LocalDispatcher(Dispatcher):
    mode = "internal"

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.slots = [Slot(i) for i in range(workers)]
        self._inbox_reader, self._inbox_writer = _ctx.Pipe(duplex=False)
        self._supervisor: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ Dispatcher
    def enqueue(self, job_id: int, chunk_ids: list[int]) -> None:
        self.wake_all()

    def wake_all(self) -> None:
        for slot in self.slots:
            writer = slot.wake_writer
            if writer is not None:
                notify(writer.fileno())

    # ------------------------------------------------------------ supervision
    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self, slot: Slot) -> None:
        from conveyor.worker.process import worker_main

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
        # The pool shares this host's cores: by default each worker's model gets its share, so
        # busy workers do not oversubscribe the CPU (threads spinning against each other).
        data["model_threads"] = self.settings.model_threads or default_model_threads(len(self.slots))
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
        data = os.read(inbox, MESSAGE.size * 256)
        wake = False
        for offset in range(0, len(data) - len(data) % MESSAGE.size, MESSAGE.size):
            kind, index, pid = MESSAGE.unpack_from(data, offset)
            if kind == READY and index < len(self.slots):
                self.slots[index].ready_pid = pid
            elif kind == WAKE_ALL:
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
