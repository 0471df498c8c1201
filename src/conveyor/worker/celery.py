"""The Celery side of distributed mode: the app, the ``conveyor.run_chunk`` task, the worker.

A message names one chunk; the store decides whether it runs. The task claims exactly that
chunk under a lease, so a message delivered twice (``acks_late`` redelivery after a worker was
killed, a re-queue by the sweeper) finds the chunk no longer QUEUED and does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from billiard.process import current_process
from celery import Celery, Task, bootsteps
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down
from kombu import Queue

from conveyor.errors import BrokerNotConfigured
from conveyor.pipelines import registry, torch_runtime
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.worker.executor import ChunkExecutor, StopReason
from conveyor.worker.pool import model_threads
from conveyor.worker.presence import Presence

log = logging.getLogger(__name__)

RUN_CHUNK = "conveyor.run_chunk"
#: A worker serving only some pipelines hands a chunk of another pipeline back after this delay.
FOREIGN_CHUNK_RETRY_SECONDS = 1.0
#: Redis: an unacknowledged message (its worker host died) is delivered again after this. Kept
#: short because an early redelivery of a chunk still running elsewhere is a no-op (it is LEASED).
REDIS_VISIBILITY_TIMEOUT_SECONDS = 300


def make_celery(settings: Settings, *, pipelines: Sequence[str] = ()) -> Celery:
    """The Celery app for these settings, with the Conveyor task set registered.

    ``pipelines`` limits what a worker built from this app runs (empty: every pipeline).
    Publishing does not depend on it, so the API builds the same app without it.
    """
    if not settings.broker_url:
        raise BrokerNotConfigured(
            "CONVEYOR_BROKER_URL is not set (e.g. redis://host:6379/0 or amqp://host//)."
        )
    app = Celery("conveyor", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_queues=[Queue(settings.queue, routing_key=settings.queue)],
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_SECONDS},
    )
    _register_tasks(app, settings, tuple(pipelines))
    return app


def publish(app: Celery, queue: str, chunk_ids: Iterable[int]) -> int:
    """Send one ``run_chunk`` message per chunk over one pooled connection. Returns the count."""
    task = app.tasks[RUN_CHUNK]
    sent = 0
    with app.producer_or_acquire() as producer:
        for chunk_id in chunk_ids:
            task.apply_async(args=[int(chunk_id)], queue=queue, producer=producer)
            sent += 1
    return sent


@dataclass
class _Runtime:
    """What one worker process builds once: a store connection pool and a warm executor."""

    pid: int
    store: Store
    executor: ChunkExecutor
    presence: Presence


_runtime: _Runtime | None = None
#: Set in a pool process when its worker shuts down: the running chunk is handed back at once.
_shutdown = threading.Event()
#: What the worker's main process sends its pool processes on a warm shutdown.
HAND_BACK_SIGNAL = signal.SIGUSR2
#: The Celery node name (``--hostname``) of this worker; pool processes inherit it with the fork.
_node_name = ""


def registry_name() -> str:
    """The worker registry's name of this pool process: the Celery node name and the pool slot
    (a replaced pool process takes over its slot's row)."""
    index = getattr(current_process(), "index", None)
    slot = f"pool-{index}" if index is not None else f"pid-{os.getpid()}"
    return f"{_node_name or socket.gethostname()}/{slot}"


def _runtime_for(settings: Settings, app: Celery, pipelines: Sequence[str] = ()) -> _Runtime:
    # Built lazily in the pool's child process: a database pool must never cross a fork.
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        store = Store(settings, pool_size=2)
        name = f"celery:{socket.gethostname()}:{os.getpid()}"
        presence = Presence(
            store,
            kind="celery",
            name=registry_name(),
            pipelines=list(pipelines) or sorted(registry.available()),
            info={"node": _node_name, "queue": settings.queue},
        )
        executor = ChunkExecutor(
            store,
            settings,
            worker_name=name,
            shutdown=_shutdown,
            # A collect stage's new item chunks go out as messages as soon as they are committed.
            on_queued=lambda chunk_ids: publish(app, settings.queue, chunk_ids),
            presence=presence,
        )
        _runtime = _Runtime(os.getpid(), store, executor, presence.start())
    return _runtime


def _register_tasks(app: Celery, settings: Settings, pipelines: tuple[str, ...]) -> None:
    @app.task(
        name=RUN_CHUNK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,
    )
    def run_chunk(self: Task, chunk_id: int) -> dict[str, Any]:
        runtime = _runtime_for(settings, app, pipelines)
        claim = runtime.store.chunks.claim(
            runtime.executor.worker_name, settings.lease_seconds, chunk_id=chunk_id, pipeline_slugs=pipelines
        )
        if claim is None:
            if pipelines and runtime.store.chunks.waits_for_another_worker(chunk_id):
                raise self.retry(countdown=FOREIGN_CHUNK_RETRY_SECONDS, queue=settings.queue)
            log.info("run_chunk chunk=%d skipped (not queued: done, dropped or held elsewhere)", chunk_id)
            return {"chunk_id": chunk_id, "ran": False}
        report = runtime.executor.run(claim)  # reported to the registry; idle at its next keep-alive
        log.info(
            "run_chunk chunk=%d job=%d processed=%d stop=%s",
            chunk_id,
            report.job_id,
            report.processed,
            report.stop.value or "none",
        )
        follow_up = list(report.unblocked)  # the delay stage released the job's item chunks
        if report.stop is StopReason.SHUTDOWN:
            follow_up.append(chunk_id)  # given back to the queue in the store; send it again
        if follow_up:
            publish(app, settings.queue, follow_up)
        return {"chunk_id": chunk_id, "ran": True, "processed": report.processed}


class HandBackRunningChunks(bootsteps.StartStopStep):
    """On a warm shutdown, tell pool processes to give their chunks back instead of finishing them.

    Celery would otherwise wait for each running task, i.e. a whole chunk. The chunk goes back
    to QUEUED in the store (items written so far are kept) and its message is published again.
    The signal goes out as soon as the shutdown begins (``worker_shutting_down``), before
    Celery stops its consumer, which on some transports waits for the running tasks.
    """

    requires = ("celery.worker.components:Pool",)
    worker: Any = None

    def start(self, parent: Any) -> None:
        HandBackRunningChunks.worker = parent

    def stop(self, parent: Any) -> None:
        hand_back_running_chunks()

    terminate = stop


def hand_back_running_chunks(**_: Any) -> None:
    pool = getattr(HandBackRunningChunks.worker, "pool", None)
    pids = pool.info.get("processes", []) if pool is not None else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, HAND_BACK_SIGNAL)


def _on_pool_process_start(**_: Any) -> None:
    _shutdown.clear()
    signal.signal(HAND_BACK_SIGNAL, lambda *_: _shutdown.set())


def _on_pool_process_stop(**_: Any) -> None:
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.presence.stopped()


def run_worker(
    settings: Settings,
    *,
    concurrency: int,
    pipelines: Sequence[str] = (),
    loglevel: str = "info",
) -> None:
    """Run a Celery worker (prefork pool) on ``settings.queue`` until it is told to stop."""
    global _node_name
    _node_name = f"conveyor-{os.getpid()}@{socket.gethostname()}"
    app = make_celery(settings, pipelines=pipelines)
    # Pool processes inherit this: each model gets its share of the host's cores.
    torch_runtime.use_model_threads(model_threads(settings, concurrency))
    app.steps["worker"].add(HandBackRunningChunks)
    worker_process_init.connect(_on_pool_process_start, weak=False)
    # Each pool process reports itself as soon as it runs, not only at its first message.
    worker_process_init.connect(lambda **_: _runtime_for(settings, app, pipelines), weak=False)
    worker_process_shutdown.connect(_on_pool_process_stop, weak=False)
    worker_shutting_down.connect(hand_back_running_chunks, weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--queues={settings.queue}",
            f"--loglevel={loglevel.upper()}",
            f"--hostname={_node_name}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
