"""The sweeper: periodic upkeep that no single worker can be trusted to do.

It re-queues chunks whose lease ran out (a worker was killed), times jobs out, settles
canceled jobs (the store's verbs in ``store/sweeping.py``) and writes the output manifest of
jobs that ended (``services/outputs.py``). Every step is a guarded
compare-and-set, so several sweepers (one per API server) may run at once.
"""

from __future__ import annotations

import logging
import threading

from conveyor.dispatch.base import Dispatcher
from conveyor.services.outputs import OutputFinisher
from conveyor.store import Store

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, period: float, cancel_grace: float) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.period = period
        self.cancel_grace = cancel_grace
        self.outputs = OutputFinisher(store, store.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> dict[str, list[int]]:
        self.dispatcher.retry_pending()
        self.dispatcher.reconcile(self.store)
        requeued = self.store.sweeping.reap_expired()
        if requeued:
            log.warning("re-queued %d chunk(s) whose lease expired", len(requeued))
            self.dispatcher.enqueue(requeued)
        timed_out = self.store.sweeping.time_out_jobs()
        for job_id in timed_out:
            self.dispatcher.revoke(job_id)
        revoked = self.store.sweeping.settle_canceling(self.cancel_grace)
        manifests = self.outputs.finish_ended()
        return {"requeued": requeued, "timed_out": timed_out, "revoked": revoked, "manifests": manifests}

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.sweep_once()
            except Exception:  # the sweeper must outlive a dropped connection; it retries next period
                log.exception("sweep failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
