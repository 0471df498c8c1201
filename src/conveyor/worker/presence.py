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
        self._busy = False
        # One report at a time: the keep-alive thread must not overtake a newer state with an older one.
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> Presence:
        """Report the worker (idle) and keep it reported until ``stopped``."""
        self.idle()
        period = self.store.workers.keepalive_seconds(self.kind)
        threading.Thread(target=self._keep_alive, args=(period,), name="presence", daemon=True).start()
        return self

    def _keep_alive(self, period: float) -> None:
        # Between chunks the worker still shows its job; a keep-alive with no chunk running shows
        # it idle (a Celery pool process has no idle loop of its own to say so).
        while not self._stop.wait(period):
            with self._lock:
                self._report(self._job if self._busy else None, 0)

    def working(self, job_id: int, items_done: int = 0) -> None:
        """A chunk of ``job_id`` starts (or goes on), ``items_done`` more items finished."""
        with self._lock:
            self._job, self._busy = job_id, True
            self._report(job_id, items_done)

    def done(self, job_id: int, items_done: int) -> None:
        """A chunk of ``job_id`` ended with ``items_done`` items finished; the next may follow at once."""
        with self._lock:
            self._job, self._busy = job_id, False
            self._report(job_id, items_done)

    def idle(self) -> None:
        """Nothing to do: shown idle now (a write only when this ends a job)."""
        with self._lock:
            self._job, self._busy = None, False
            self._report(None, 0)

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

    def stopped(self) -> None:
        self._stop.set()
        try:
            with self._lock:
                self.store.workers.stopped(self.kind, self.name)
        except Exception:
            log.warning(
                "worker %s: could not report its stop to the worker registry", self.name, exc_info=True
            )
