"""Live job events: one fan-out per API process, many Server-Sent-Event streams.

The ``EventHub`` is the only reader: a single background task polls the store's change feed
every ``period`` seconds (new job_events and job_logs rows by id, jobs whose ``updated_at`` moved)
and pushes each change to the in-memory queues of the streams that may see it. So N connected
clients cost one set of small indexed queries per tick, not N. Because workers write to the same
database in both modes, this works alike with SQLite + local workers and PostgreSQL + Celery.

An ``EventStream`` is one client's view: it subscribes first, then replays from the client's
cursor (``Last-Event-ID``) out of the store, then follows the hub, skipping what it already sent;
so a reconnect loses no transition and no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import RowMapping

from conveyor.clock import utcnow
from conveyor.domain.access import Scope
from conveyor.store.changes import ChangeFeed, Changes, Cursor

log = logging.getLogger(__name__)

JOB, STATUS, LOG, SHUTDOWN, OVERFLOW = "job", "status", "log", "shutdown", "overflow"
QUEUE_SIZE = 10_000
REPLAY_PAGE = 1000
GAP_TTL_SECONDS = 10.0
MAX_GAPS = 10_000


@dataclass(frozen=True)
class Message:
    """One change as the hub saw it. ``row`` is a job, job_events or job_logs row."""

    kind: str
    job_id: int = 0
    account_id: int = 0
    project_id: int = 0
    row: RowMapping | None = None

    @property
    def row_id(self) -> int:
        return int(self.row["id"]) if self.row is not None else 0


_SHUTDOWN = Message(SHUTDOWN)
_OVERFLOW = Message(OVERFLOW)


@dataclass(eq=False)
class Subscription:
    """What one stream may see: its account (and the key's project), narrowed to a job or project."""

    scope: Scope
    job_id: int | None = None
    project_id: int | None = None
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants(self, message: Message) -> bool:
        if message.account_id != self.scope.account_id:
            return False
        if self.scope.project_ids is not None and message.project_id not in self.scope.project_ids:
            return False
        if self.job_id is not None and message.job_id != self.job_id:
            return False
        return self.project_id is None or message.project_id == self.project_id

    def offer(self, message: Message) -> bool:
        """Queue a message; False when the client is too slow (it must reconnect and replay)."""
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            return False


class _Gaps:
    """Ids skipped over by the feed: on PostgreSQL a transaction that took a lower id may commit
    after a higher one was read. They are asked for again until found or ``GAP_TTL_SECONDS`` old."""

    def __init__(self) -> None:
        self.expires: dict[int, float] = {}

    def ids(self) -> list[int]:
        now = time.monotonic()
        self.expires = {i: t for i, t in self.expires.items() if t > now}
        return sorted(self.expires)

    def update(self, previous_max: int, rows: list[RowMapping]) -> int:
        found = {int(r["id"]) for r in rows}
        for i in found:
            self.expires.pop(i, None)
        new_max = max([previous_max, *found])
        if new_max - previous_max <= MAX_GAPS:
            deadline = time.monotonic() + GAP_TTL_SECONDS
            for i in range(previous_max + 1, new_max):
                if i not in found:
                    self.expires[i] = deadline
        return new_max


class EventHub:
    def __init__(self, feed: ChangeFeed, *, period: float = 0.25, window_seconds: float = 5.0) -> None:
        self.feed = feed
        self.period = period
        # Job rows carry the writer's clock: re-read a few seconds back so a late commit is not missed
        # (and de-duplicate by a signature of what a client sees).
        self.window = timedelta(seconds=window_seconds)
        self.subscriptions: set[Subscription] = set()
        self.closed = False
        self.polls = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cursor = Cursor()
        self._event_gaps = _Gaps()
        self._log_gaps = _Gaps()
        self._signatures: dict[int, tuple[object, ...]] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._cursor = await asyncio.to_thread(self.feed.head)
        self._task = asyncio.create_task(self._run(), name="conveyor-event-hub")

    def close(self) -> None:
        """End every stream (they send a ``shutdown`` event) and stop polling. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for subscription in list(self.subscriptions):
            _force(subscription.queue, _SHUTDOWN)
        self.subscriptions.clear()
        self._wake.set()

    def close_threadsafe(self) -> None:
        """``close`` from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close)

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---------------------------------------------------------- subscribers
    def subscribe(self, subscription: Subscription) -> Subscription:
        if self.closed:
            subscription.queue.put_nowait(_SHUTDOWN)
        else:
            self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    # ---------------------------------------------------------------- poll
    async def _run(self) -> None:
        while not self.closed:
            try:
                await self._poll_once()
            except Exception:  # a database hiccup must not end live updates for good
                log.exception("event hub poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)

    async def _poll_once(self) -> None:
        since = utcnow() - self.window if self.subscriptions else None
        changes = await asyncio.to_thread(
            self.feed.poll,
            self._cursor,
            event_gaps=self._event_gaps.ids(),
            log_gaps=self._log_gaps.ids(),
            jobs_since=since,
        )
        self.polls += 1
        self._cursor = Cursor(
            self._event_gaps.update(self._cursor.event_id, changes.events),
            self._log_gaps.update(self._cursor.log_id, changes.logs),
        )
        self._publish(changes, since)

    def _publish(self, changes: Changes, since: datetime | None) -> None:
        messages = [_message(STATUS, r) for r in changes.events]
        messages += [_message(LOG, r) for r in changes.logs]
        for row in changes.jobs:
            signature = _signature(row)
            if self._signatures.get(row["id"]) != signature:
                self._signatures[row["id"]] = signature
                messages.append(Message(JOB, row["id"], row["account_id"], row["project_id"], row))
        if since is not None:
            self._signatures = {
                job_id: sig
                for job_id, sig in self._signatures.items()
                if isinstance(sig[0], datetime) and sig[0] >= since
            }
        for subscription in list(self.subscriptions):
            for message in messages:
                if subscription.wants(message) and not subscription.offer(message):
                    self.subscriptions.discard(subscription)
                    _force(subscription.queue, _OVERFLOW)
                    break


def _force(queue: asyncio.Queue[Message], message: Message) -> None:
    """Put a final notice even into a full queue (dropping the oldest entry makes room)."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(message)


def _message(kind: str, row: RowMapping) -> Message:
    return Message(kind, row["job_id"], row["account_id"], row["project_id"], row)


def _signature(row: RowMapping) -> tuple[object, ...]:
    return (
        row["updated_at"],
        row["status"],
        row["pending"],
        row["completed"],
        row["failed"],
        row["canceled"],
        row["delay_progress"],
    )


@dataclass(frozen=True)
class Outgoing:
    """One event for the client: its kind, the cursor to send as its id, and the row to present."""

    kind: str
    cursor: Cursor
    row: RowMapping | None = None


class EventStream:
    """One client's stream: replay from its cursor, then follow the hub. Iterate it."""

    def __init__(
        self,
        hub: EventHub,
        scope: Scope,
        *,
        job_id: int | None = None,
        project_id: int | None = None,
        resume: Cursor | None = None,
        keepalive_seconds: float = 15.0,
    ) -> None:
        self.hub = hub
        self.scope = scope
        self.job_id = job_id
        self.project_id = project_id
        self.resume = resume
        self.keepalive = keepalive_seconds

    async def __aiter__(self) -> AsyncIterator[Outgoing | None]:
        """Yields events; ``None`` means "nothing for a while" (send a keep-alive comment)."""
        subscription = self.hub.subscribe(
            Subscription(self.scope, job_id=self.job_id, project_id=self.project_id)
        )
        try:
            async for item in self._follow(subscription):
                yield item
        finally:
            self.hub.unsubscribe(subscription)

    async def _follow(self, subscription: Subscription) -> AsyncIterator[Outgoing | None]:
        feed = self.hub.feed
        # Subscribed before reading the start: whatever commits from here on reaches the queue.
        head = await asyncio.to_thread(feed.head)
        start = head
        if self.resume is not None:
            # A cursor from the future (another database, a restored backup) must not mute the stream.
            start = Cursor(min(self.resume.event_id, head.event_id), min(self.resume.log_id, head.log_id))
        cursor = start
        sent_events: set[int] = set()
        sent_logs: set[int] = set()
        job_versions: dict[int, object] = {}
        if self.resume is not None:
            after = start
            while True:
                page = await asyncio.to_thread(
                    feed.replay,
                    self.scope,
                    after,
                    job_id=self.job_id,
                    project_id=self.project_id,
                    limit=REPLAY_PAGE,
                )
                for row in page.events:
                    sent_events.add(row["id"])
                    cursor = cursor.advance(event_id=row["id"])
                    yield Outgoing(STATUS, cursor, row)
                for row in page.logs:
                    sent_logs.add(row["id"])
                    cursor = cursor.advance(log_id=row["id"])
                    yield Outgoing(LOG, cursor, row)
                for row in page.jobs:
                    job_versions[row["id"]] = row["updated_at"]
                    yield Outgoing(JOB, cursor, row)
                if len(page.events) < REPLAY_PAGE and len(page.logs) < REPLAY_PAGE:
                    break
                after = cursor
        if self.job_id is not None and self.job_id not in job_versions:
            rows = await asyncio.to_thread(feed.current_jobs, [self.job_id])
            for row in rows:
                job_versions[row["id"]] = row["updated_at"]
                yield Outgoing(JOB, cursor, row)
        while True:
            try:
                message = await asyncio.wait_for(subscription.queue.get(), self.keepalive)
            except TimeoutError:
                yield None
                continue
            if message.kind in (SHUTDOWN, OVERFLOW):
                yield Outgoing(message.kind, cursor)
                return
            assert message.row is not None
            if message.kind == STATUS:
                if message.row_id <= start.event_id or message.row_id in sent_events:
                    continue
                cursor = cursor.advance(event_id=message.row_id)
            elif message.kind == LOG:
                if message.row_id <= start.log_id or message.row_id in sent_logs:
                    continue
                cursor = cursor.advance(log_id=message.row_id)
            else:
                seen = job_versions.get(message.job_id)
                updated = message.row["updated_at"]
                if isinstance(seen, datetime) and updated < seen:
                    continue  # older than the snapshot already sent
                job_versions[message.job_id] = updated
            yield Outgoing(message.kind, cursor, message.row)
