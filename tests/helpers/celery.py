"""Distributed deployments for the suites: a server without local workers, `conveyor worker`
(Celery) processes, and the brokers they use.

A worker is started in its own session like a server (``conveyor.testing``) and stopped with
the shared process-group kill; it is ready once Celery says so and its prefork pool runs.
``PrivateRedis`` is a broker of one test, on a free port, for tests that stop their broker.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.helpers import CONVEYOR, Server, children_of, kill_process_group, start_server, wait_for
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


def start_celery_server(
    data_dir: Path,
    *,
    database_url: str,
    broker_url: str,
    queue: str,
    extra_env: Mapping[str, str] | None = None,
    **kw: Any,
) -> Server:
    """``conveyor serve --workers 0`` on ``database_url`` that sends its chunks to ``queue`` on
    ``broker_url``, for `conveyor worker` processes to run (``start_worker``)."""
    env = {
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_BROKER_URL": broker_url,
        "CONVEYOR_QUEUE": queue,
        **(extra_env or {}),
    }
    return start_server(data_dir, workers=0, extra_env=env, **kw)


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


class PrivateRedis:
    """A redis-server of this test only, on a free port, without persistence (a restart loses
    every message, as a crashed broker without AOF does). Never the shared 6379."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
