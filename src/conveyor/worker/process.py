"""The local worker process: claim a chunk, run it, repeat; sleep until woken when idle.

Started in a slot of ``worker/pool.py``; it talks to the pool only through the pipes of
``worker/wakeup.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from conveyor import logs
from conveyor.pipelines import registry, torch_runtime
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.worker.executor import ChunkExecutor
from conveyor.worker.presence import Presence
from conveyor.worker.wakeup import READY, WAKE_ALL, drain, send

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0
#: How often a worker checks that the server that started it is still there.
PARENT_CHECK_SECONDS = 0.5


def worker_main(settings_data: dict[str, Any], slot: int, wake: Connection, inbox: Connection) -> None:
    logs.configure(os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"), process_name=f"worker-{slot}")
    shutdown = threading.Event()
    # SIGTERM (from the parent, or an operator) is a graceful stop. A self-pipe interrupts the
    # idle wait at once. Ctrl-C in a terminal reaches the whole process group: the parent
    # decides, so SIGINT is ignored here.
    stop_reader, stop_writer = os.pipe()

    def on_term(*_: object) -> None:
        shutdown.set()
        with contextlib.suppress(OSError):
            os.write(stop_writer, b"x")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(os.getppid(), slot, on_term, shutdown)
    settings = Settings(**settings_data)
    if settings.model_threads:  # read by the model pipelines when they load
        torch_runtime.use_model_threads(settings.model_threads)
    store = Store(settings, pool_size=2)
    installed = registry.available()
    # A stable name per slot: a replacement process takes over its predecessor's registry row.
    presence = Presence(
        store, kind="local", name=local_name(slot), pipelines=sorted(installed), info={"slot": slot}
    )
    executor = ChunkExecutor(
        store,
        settings,
        worker_name=f"{os.uname().nodename}:{os.getpid()}:{slot}",
        shutdown=shutdown,
        # A collect stage queued item chunks: wake the siblings so they start on them now.
        on_queued=lambda _chunk_ids: send(inbox, WAKE_ALL, slot),
        presence=presence,
    )
    wake_fd = wake.fileno()
    os.set_blocking(wake_fd, False)
    send(inbox, READY, slot)  # /readyz counts this worker from now on
    log.info("worker %d ready (pid %d)", slot, os.getpid())
    presence.start()
    try:
        while not shutdown.is_set():
            if not drain(wake_fd):  # before looking, so a wake-up during the claim is not lost
                log.warning("worker %d: the server closed its wake-up pipe; stopping", slot)
                on_term()
                break
            try:
                report = executor.claim_and_run()
            except Exception:
                log.exception("worker %d: claim or run failed; retrying", slot)
                shutdown.wait(0.5)
                continue
            if report is None:
                presence.idle()  # written when this ends a job, else a no-op (throttled)
                select.select([wake_fd, stop_reader], [], [], IDLE_POLL_SECONDS)
            elif report.unblocked:
                send(inbox, WAKE_ALL, slot)  # a delay stage released chunks: wake the siblings too
    finally:
        presence.stopped()
        store.close()
        log.info("worker %d stopped", slot)


def local_name(slot: int) -> str:
    """The registry name of a server's local worker in ``slot``."""
    return f"{socket.gethostname()}/local-{slot}"


def _watch_parent(parent: int, slot: int, stop: Callable[[], None], shutdown: threading.Event) -> None:
    """Stop gracefully when the server dies without stopping its workers (``kill -9``, OOM killer).

    An orphaned worker would otherwise run on beside the restarted server's pool, holding chunks
    and database connections. Its running chunk is handed back to the queue (as on SIGTERM).
    """

    def watch() -> None:
        while not shutdown.wait(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                log.warning("worker %d: its server (pid %d) is gone; stopping", slot, parent)
                stop()
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
