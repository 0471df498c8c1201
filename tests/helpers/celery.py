"""`conveyor worker` (Celery) processes and the brokers they use, for the distributed suites.

A worker is started in its own session like a server (``conveyor.testing``), with the shared
free-port and process-group helpers; it is ready once Celery says so and its prefork pool runs.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tests.helpers import CONVEYOR, Server, children_of, kill_process_group, wait_for
from tests.helpers.backends import chunk_rows, item_rows

BROKERS = {
    "redis": ("Redis", "127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
    "rabbitmq": ("RabbitMQ", "127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}
WORKER_CONCURRENCY = 2


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the prefork pool's processes."""
        return children_of(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        kill_process_group(self.pid)


@dataclass
class Cluster:
    """A distributed deployment: PostgreSQL, `conveyor serve --workers 0`, `conveyor worker`."""

    broker: str
    database_url: str
    queue: str
    server: Server
    worker: CeleryWorker
    engine: sa.Engine

    def items(self, job_id: int) -> list[tuple[int, str, int]]:
        """(seq, status, attempts) from PostgreSQL: the ground truth the counters must match."""
        return item_rows(self.engine, job_id)

    def chunks(self, job_id: int) -> list[tuple[int, str, str, int, str | None]]:
        """(id, kind, status, attempts, leased_by) of the job's chunks."""
        return chunk_rows(self.engine, job_id)


def start_worker(
    env: Mapping[str, str], queue: str, log_path: Path, *, pipelines: str | None = None
) -> CeleryWorker:
    args = ["worker", "--concurrency", str(WORKER_CONCURRENCY), "--queue", queue, "--loglevel", "info"]
    if pipelines:
        args += ["--pipelines", pipelines]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*CONVEYOR, *args],
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = CeleryWorker(process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()}")
        return " ready." in worker.log() and len(worker.children()) >= WORKER_CONCURRENCY

    try:
        wait_for(ready, 60, interval=0.1, what="the celery worker to be ready")
    except BaseException:
        worker.stop()
        raise
    return worker


def delete_queue(broker_url: str, queue: str) -> None:
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(broker_url, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)
    if broker_url.startswith("redis://"):
        import redis

        with contextlib.suppress(Exception), redis.Redis.from_url(broker_url) as client:
            client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
