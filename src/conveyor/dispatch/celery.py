"""Distributed dispatch: one Celery message per chunk (never per item), on a Redis or RabbitMQ broker.

The store stays the source of truth. Cancel needs no broker work: queued chunks are DROPPED
in the store, so their messages find nothing to claim, and running workers see the cancel
flag through their lease heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from conveyor.dispatch.base import Dispatcher
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.worker.celery import make_celery, publish

log = logging.getLogger(__name__)


class CeleryDispatcher(Dispatcher):
    mode = "celery"

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.queue = settings.queue
        self.app = app or make_celery(settings)
        self._unsent: set[int] = set()
        self._lock = threading.Lock()
        #: How long a chunk may wait QUEUED beside an empty broker queue before it is sent again.
        self.stale_seconds = settings.lease_seconds
        self._next_check = 0.0
        #: Chunk id -> (seen QUEUED since, how long to wait before sending it again).
        self._waiting: dict[int, tuple[float, float]] = {}

    def enqueue(self, chunk_ids: list[int]) -> None:
        """Publish; if the broker is down, keep the ids and let the sweeper retry.

        The job is already committed, so a submission never fails because of the broker: its
        chunks stay QUEUED in the store and are sent once the broker answers again.
        """
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
            self.enqueue(pending)

    def recover(self, store: Store) -> int:
        """Publish every QUEUED chunk again, e.g. after the broker lost messages or was replaced.

        Safe at any time: a chunk is claimed once, so extra messages are no-ops.
        """
        chunk_ids = store.sweeping.queued_chunk_ids()
        if not chunk_ids:
            return 0
        log.info("re-publishing %d queued chunk(s) to %s", len(chunk_ids), self.queue)
        try:
            self.enqueue(chunk_ids)
        except Exception:  # the API must come up even when the broker is down; retried next start
            log.exception("could not re-publish queued chunks to %s", self.queue)
            return 0
        return len(chunk_ids)

    def reconcile(self, store: Store, *, now: float | None = None) -> int:
        """Publish again the chunks that wait QUEUED while the broker's queue is empty.

        A message can vanish while its chunk stays QUEUED in the store: a broker restarted
        without persistence loses every message, and a worker killed with messages prefetched
        leaves them unacknowledged (Redis hands them out again only after its visibility
        timeout). So, at most once per ``stale_seconds``: a chunk seen QUEUED at two checks in a
        row while the queue is empty has lost its message (or a busy worker holds it, and a
        duplicate message is a no-op: a chunk is claimed once) and is published again. A chunk
        that stays QUEUED anyway (no worker serves its pipeline) is sent again ever more rarely
        (the wait doubles, up to 64 periods), so copies never pile up.
        """
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return 0
        self._next_check = now + self.stale_seconds
        queued = store.sweeping.queued_chunk_ids()
        self._waiting = {c: self._waiting.get(c, (now, self.stale_seconds)) for c in queued}
        stale = [c for c, (since, wait) in self._waiting.items() if now - since >= wait]
        if not stale or self.queue_depth() != 0:
            return 0
        log.warning(
            "%d chunk(s) waited queued while queue %s was empty (messages lost); publishing them again",
            len(stale),
            self.queue,
        )
        self.enqueue(stale)
        for chunk_id in stale:
            wait = self._waiting[chunk_id][1]
            self._waiting[chunk_id] = (now, min(wait * 2, 64 * self.stale_seconds))
        return len(stale)

    def queue_depth(self) -> int | None:
        """Messages waiting in the broker's queue (not those held by workers); None if unreachable."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=1)
                try:
                    declared = conn.default_channel.queue_declare(queue=self.queue, passive=True)
                except conn.channel_errors:  # the queue does not exist (any more): nothing waits in it
                    return 0
                return int(declared.message_count)
        except Exception:  # the broker is down: enqueue() keeps what it cannot send
            return None

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
