"""Distributed dispatch: one Celery message per chunk (never per item), on a Redis or RabbitMQ broker.

The store stays the source of truth. Cancel needs no broker work: queued chunks are DROPPED
in the store, so their messages find nothing to claim, and running workers see the cancel
flag through their lease heartbeat.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from conveyor.dispatch.base import Dispatcher
from conveyor.dispatch.celery_app import make_celery, publish
from conveyor.settings import Settings
from conveyor.store import Store

log = logging.getLogger(__name__)


class CeleryDispatcher(Dispatcher):
    mode = "celery"

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.queue = settings.queue
        self.app = app or make_celery(settings)
        self._unsent: set[int] = set()
        self._lock = threading.Lock()

    def enqueue(self, job_id: int, chunk_ids: list[int]) -> None:
        """Publish; if the broker is down, keep the ids and let the sweeper retry.

        The job is already committed, so a submission never fails because of the broker: its
        chunks stay QUEUED in the store and are sent once the broker answers again.
        """
        # job_id is 0 when the sweeper re-queues chunks of several jobs; chunk ids suffice.
        if not chunk_ids:
            return
        try:
            publish(self.app, self.queue, chunk_ids)
        except Exception:
            log.exception("broker unreachable: %d chunk(s) will be sent when it answers", len(chunk_ids))
            with self._lock:
                self._unsent.update(chunk_ids)

    def retry_pending(self) -> None:
        with self._lock:
            pending, self._unsent = sorted(self._unsent), set()
        if pending:
            self.enqueue(0, pending)

    def recover(self, store: Store) -> int:
        """Publish every QUEUED chunk again, e.g. after the broker lost messages or was replaced.

        Safe at any time: a chunk is claimed once, so extra messages are no-ops.
        """
        chunk_ids = store.chunks.queued_chunk_ids()
        if not chunk_ids:
            return 0
        log.info("re-publishing %d queued chunk(s) to %s", len(chunk_ids), self.queue)
        try:
            self.enqueue(0, chunk_ids)
        except Exception:  # the API must come up even when the broker is down; retried next start
            log.exception("could not re-publish queued chunks to %s", self.queue)
            return 0
        return len(chunk_ids)

    def check(self) -> str:
        """Whether the broker answers now (one connection attempt, at most ~1 s)."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=1)
        except Exception as exc:  # reported by /readyz, which exists to say what is wrong
            return f"error: {exc.__class__.__name__}"
        return "ok"

    def close(self) -> None:
        self.app.close()
