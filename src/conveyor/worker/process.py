"""The local worker process: claim a chunk, run it, repeat; sleep until woken when idle."""

from __future__ import annotations

import logging
import os
import signal
import threading
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from conveyor.pipelines import registry
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.worker.executor import ChunkExecutor

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0


def worker_main(
    settings_data: dict[str, Any],
    slot: int,
    wake: MpEvent,
    wake_all: list[MpEvent],
    stop: MpEvent,
    ready: MpEvent | None = None,
) -> None:
    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s worker-{slot} %(levelname)s %(name)s: %(message)s",
    )
    # The parent decides when to stop (it sets ``stop``); Ctrl-C in a terminal reaches the whole
    # process group, so ignore SIGINT here and treat SIGTERM as a graceful stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = Settings(**settings_data)
    store = Store(settings, pool_size=2)
    shutdown = threading.Event()

    def relay_stop() -> None:
        stop.wait()
        shutdown.set()
        wake.set()

    threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
    registry.available()
    executor = ChunkExecutor(
        store, settings, worker_name=f"{os.uname().nodename}:{os.getpid()}:{slot}", shutdown=shutdown
    )
    if ready is not None:
        ready.set()  # /readyz counts this worker from now on
    log.info("worker %d ready (pid %d)", slot, os.getpid())
    try:
        while not shutdown.is_set():
            wake.clear()  # clear before looking, so a wake-up during the claim is not lost
            try:
                report = executor.claim_and_run()
            except Exception:
                log.exception("worker %d: claim or run failed; retrying", slot)
                shutdown.wait(0.5)
                continue
            if report is None:
                wake.wait(IDLE_POLL_SECONDS)
            elif report.unblocked:
                for event in wake_all:
                    event.set()
    finally:
        store.close()
        log.info("worker %d stopped", slot)
