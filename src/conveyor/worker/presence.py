"""A worker process's reports to the worker registry (``store/workers.py``).

One object per worker process, told what the loop does (a chunk started, a chunk finished, idle,
stopping); a keep-alive thread reports the last state again while nothing happens (a Celery pool
process waiting for a message, a long chunk), so a live worker never looks lost. The registry
throttles the writes; a failed report is logged and dropped, never the worker's problem: the
registry is for people looking, the leases are what keep work safe.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from conveyor import __version__
from conveyor.store import Store

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        store: Store,
        *,
        kind: str,
        name: str,
        pipelines: Sequence[str],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.kind = kind
        self.name = name
        self.host = socket.gethostname()
        self.pipelines = list(pipelines)
        self.info = {"pid": os.getpid(), "software": "conveyor", "version": __version__, **(info or {})}
        self._started = True  # the first report resets the row's started_at and items_done
        self._job: int | None = None
        # One report at a time: the keep-alive thread must not overtake a newer state with an older one.
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> Presence:
        """Report the worker (idle) and keep it reported until ``stopped``."""
        self.working(None)
        period = self.store.workers.keepalive_seconds(self.kind)
        threading.Thread(target=self._keep_alive, args=(period,), name="presence", daemon=True).start()
        return self

    def _keep_alive(self, period: float) -> None:
        while not self._stop.wait(period):
            self.working(self._job)

    def working(self, job_id: int | None, items_done: int = 0) -> None:
        """On a job now (None: idle), with ``items_done`` more items finished since the last report."""
        with self._lock:
            self._job = job_id
            self._report(job_id, items_done)

    def _report(self, job_id: int | None, items_done: int) -> None:
        try:
            self.store.workers.seen(
                self.kind,
                self.name,
                host=self.host,
                pipelines=self.pipelines,
                info=self.info,
                job_id=job_id,
                items_done=items_done,
                started=self._started,
            )
            self._started = False
        except Exception:
            log.warning("worker %s: could not report to the worker registry", self.name, exc_info=True)

    def idle(self) -> None:
        self.working(None)

    def stopped(self) -> None:
        self._stop.set()
        try:
            with self._lock:
                self.store.workers.stopped(self.kind, self.name)
        except Exception:
            log.warning(
                "worker %s: could not report its stop to the worker registry", self.name, exc_info=True
            )
