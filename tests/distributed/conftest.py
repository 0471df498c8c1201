"""A distributed Conveyor per broker: PostgreSQL, `conveyor serve --workers 0`, `conveyor worker`.

Each cluster has its own database and its own queue name, so runs never see each other's
messages; the queue is deleted from the broker afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.backends import chunk_rows, item_rows, postgres_database, require_service
from tests.conftest import CONVEYOR, Server, children_of, start_server, wait_for

BROKERS = {
    "redis": ("Redis", "127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
    "rabbitmq": ("RabbitMQ", "127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}
WORKER_CONCURRENCY = 2


@dataclass
class CeleryWorker:
    process: subprocess.Popen[str]
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
        _kill_group(self.pid)


@dataclass
class Cluster:
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


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def start_worker(
    env: dict[str, str], queue: str, log_path: Path, *, pipelines: str | None = None
) -> CeleryWorker:
    log_file = log_path.open("w")
    args = ["worker", "--concurrency", str(WORKER_CONCURRENCY), "--queue", queue, "--loglevel", "info"]
    if pipelines:
        args += ["--pipelines", pipelines]
    process = subprocess.Popen(
        [*CONVEYOR, *args],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
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


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name, host, port, broker_url = BROKERS[request.param]
    require_service(name, host, port)
    queue = f"conveyor-test-{request.param}-{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path_factory.mktemp(f"celery-{request.param}")
    with postgres_database() as database_url:
        extra = {
            "CONVEYOR_DATABASE_URL": database_url,
            "CONVEYOR_BROKER_URL": broker_url,
            "CONVEYOR_QUEUE": queue,
            "CONVEYOR_CHUNK_SIZE": "5",
        }
        server = start_server(data_dir, workers=0, extra_env=extra)
        workers: list[CeleryWorker] = []
        engine = sa.create_engine(database_url)
        try:
            workers.append(start_worker(server.env, queue, data_dir / "worker.log"))
            cluster = Cluster(request.param, database_url, queue, server, workers[0], engine)
            yield cluster
            workers.append(cluster.worker)  # a test may have replaced it
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
            _kill_group(server.process.pid)
            engine.dispose()
            time.sleep(0.2)  # let the dropped connections close before the database is dropped
            delete_queue(broker_url, queue)
