"""The sweeper: periodic upkeep that no single worker can be trusted to do.

It re-queues chunks whose lease ran out (a worker was killed), times jobs out, settles
canceled jobs (the store's verbs in ``store/sweeping.py``), fails pull tasks that ran out of
deliveries (``store/pull.py``) and writes the output manifest of
jobs that ended (``services/outputs.py``). Every step is a guarded
compare-and-set, so several sweepers (one per API server) may run at once. Manifests are written
in a thread of their own: a slow or unreachable output sink (retries, S3 timeouts) must never
hold up lease expiry, timeouts or cancels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from conveyor.dispatch.base import Dispatcher
from conveyor.domain.pull import registered_slug
from conveyor.services.outputs import OutputFinisher
from conveyor.store import Store
from conveyor.store.pull import waiting_message

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, period: float, cancel_grace: float) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.period = period
        self.cancel_grace = cancel_grace
        self.outputs = OutputFinisher(store, store.settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

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
        # Antenna pull (async_api) tasks never answered N times: fail them, so the job ends even
        # when no worker asks for tasks again.
        exhausted = self.store.pull.fail_exhausted_everywhere(self.store.settings.pull_max_deliveries)
        self.note_workerless_pull_jobs()
        self.store.workers.flush()
        return {"requeued": requeued, "timed_out": timed_out, "revoked": revoked, "pull_ended": exhausted}

    def note_workerless_pull_jobs(self) -> list[int]:
        """An async_api job whose pipeline no live pull worker serves says so in its results
        stage (and stops saying so once one is seen), instead of sitting silently. Returns the
        ids of the jobs whose note changed."""
        changed: list[int] = []
        lost_after = self.store.settings.pull_lease_seconds
        live_by: dict[tuple[str, int], bool] = {}  # jobs of one pipeline and account: one look-up
        for job in self.store.pull.running_jobs():
            slug = registered_slug(job["pipeline_slug"]) or ""
            served = (slug, job["account_id"])
            if served not in live_by:
                live_by[served] = self.store.workers.live_for(slug, job["account_id"], kinds=("pull",))
            live = live_by[served]
            message = None if live else waiting_message(slug, lost_after)
            if self.store.pull.note_waiting(job["id"], message):
                changed.append(job["id"])
        return changed

    def _run(self, step: Callable[[], object], what: str) -> None:
        while not self._stop.wait(self.period):
            try:
                step()
            except Exception:  # the sweeper must outlive a dropped connection; it retries next period
                log.exception("%s failed", what)

    def start(self) -> None:
        self._threads = [
            threading.Thread(
                target=self._run, args=(self.sweep_once, "sweep"), name="conveyor-sweeper", daemon=True
            ),
            threading.Thread(
                target=self._run,
                args=(self.outputs.finish_ended, "output manifests"),
                name="conveyor-output-manifests",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
