"""One Conveyor deployment per backend combination, shared by every contract test of a module.

The ``deployment`` fixture is module-scoped and parametrized over the four combinations the
product supports; the contract tests only talk to a :class:`Deployment`, so the very same test
functions run against each of them:

- ``sqlite-local``: embedded mode, SQLite + ``conveyor serve --workers 2``;
- ``postgres-local``: a fresh PostgreSQL database + ``conveyor serve --workers 2``;
- ``postgres-celery-redis`` / ``postgres-celery-rabbitmq``: a fresh PostgreSQL database,
  ``conveyor serve --workers 0`` and one ``conveyor worker --concurrency 2`` on a unique queue.

A missing service skips locally and fails under ``CI=true`` (``require_service``). Everything a
deployment starts is cleaned up: process groups, the database, the broker queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.backends import chunk_rows, item_rows, postgres_database, require_service
from tests.conftest import Server, start_server, text_inputs, wait_for
from tests.distributed.conftest import BROKERS, CeleryWorker, delete_queue, start_worker

CONTRACT_ENV = {
    "CONVEYOR_LEASE_SECONDS": "2",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.4",
    "CONVEYOR_SWEEP_SECONDS": "0.2",
    "CONVEYOR_FLUSH_SECONDS": "0.1",
    "CONVEYOR_CHUNK_SIZE": "5",
    "CONVEYOR_CANCEL_GRACE_SECONDS": "3",
}
COMBINATIONS = ("sqlite-local", "postgres-local", "postgres-celery-redis", "postgres-celery-rabbitmq")
LOCAL_WORKERS = 2
STOP_SECONDS = 10


@dataclass
class Deployment:
    """A running deployment: its API, its own database and, in Celery mode, its worker."""

    name: str
    server: Server
    engine: sa.Engine
    prefix: str  # every job of the module is named with it, so history queries can be narrowed
    worker: CeleryWorker | None = None
    job_ids: list[int] = field(default_factory=list)

    @property
    def celery(self) -> bool:
        return self.worker is not None

    def client(self) -> httpx.Client:
        return self.server.client()

    def submit(self, n: int, *, name: str, start_now: bool = True, **body: Any) -> dict[str, Any]:
        """Submit a ``test-delay`` job of ``n`` text inputs named ``<prefix>-<name>``; the 201 body."""
        payload: dict[str, Any] = {
            "name": f"{self.prefix}-{name}",
            "pipeline": "test-delay",
            "inputs": text_inputs(n),
            **body,
        }
        with self.client() as client:
            response = client.post("/api/v2/jobs/" + ("?start_now=true" if start_now else ""), json=payload)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        self.job_ids.append(job["id"])
        return job

    def items(self, job_id: int) -> list[tuple[int, str, int]]:
        """(seq, status, attempts) from the deployment's database: the ground truth for the counters."""
        return item_rows(self.engine, job_id)

    def chunks(self, job_id: int) -> list[tuple[int, str, str, int, str | None]]:
        """(id, kind, status, attempts, leased_by) of the job's chunks."""
        return chunk_rows(self.engine, job_id)

    def worker_pids(self) -> list[int]:
        """Pids of the processes that run chunks: the local pool's workers or the Celery pool's children."""
        if self.worker is not None:
            return self.worker.children()
        with self.client() as client:
            return [w["pid"] for w in client.get("/api/v2/workers/").json() if w["alive"] and w["pid"]]

    @staticmethod
    def leaseholder_pid(leased_by: str | None) -> int | None:
        """The pid in ``chunks.leased_by``: ``host:pid:slot`` (local pool) or ``celery:host:pid``."""
        if not leased_by:
            return None
        parts = leased_by.split(":")
        raw = parts[-1] if parts[0] == "celery" else parts[-2]
        return int(raw) if raw.isdigit() else None

    def kill_a_worker_holding_a_chunk(self, job_id: int, timeout: float = 30) -> tuple[int, int]:
        """SIGKILL a worker process that holds a lease on one of the job's chunks; (chunk id, pid)."""

        def held() -> tuple[int, int] | None:
            pids = set(self.worker_pids())
            for chunk_id, kind, status, _, leased_by in self.chunks(job_id):
                pid = self.leaseholder_pid(leased_by)
                if kind == "items" and status == "LEASED" and pid in pids:
                    return chunk_id, pid
            return None

        chunk_id, pid = wait_for(
            held, timeout, interval=0.02, what=f"a worker holding a chunk of job {job_id}"
        )
        os.kill(pid, signal.SIGKILL)
        return chunk_id, pid


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def _local(data_dir: Path, database_url: str | None, name: str) -> Iterator[Deployment]:
    extra = dict(CONTRACT_ENV)
    if database_url:
        extra["CONVEYOR_DATABASE_URL"] = database_url
    server = start_server(data_dir, workers=LOCAL_WORKERS, extra_env=extra)
    engine = sa.create_engine(database_url or f"sqlite:///{data_dir / 'conveyor.db'}")
    try:
        yield Deployment(name, server, engine, f"ct-{name}-{uuid.uuid4().hex[:8]}")
    finally:
        server.stop(timeout=STOP_SECONDS)
        _kill_group(server.process.pid)
        engine.dispose()


@contextlib.contextmanager
def _celery(data_dir: Path, database_url: str, broker: str, name: str) -> Iterator[Deployment]:
    _, _, _, broker_url = BROKERS[broker]
    queue = f"conveyor-contract-{broker}-{uuid.uuid4().hex[:10]}"
    extra = {
        **CONTRACT_ENV,
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_BROKER_URL": broker_url,
        "CONVEYOR_QUEUE": queue,
    }
    server: Server | None = None
    worker: CeleryWorker | None = None
    engine = sa.create_engine(database_url)
    try:
        server = start_server(data_dir, workers=0, extra_env=extra)
        worker = start_worker(server.env, queue, data_dir / "worker.log")
        yield Deployment(name, server, engine, f"ct-{name}-{uuid.uuid4().hex[:8]}", worker=worker)
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop(timeout=STOP_SECONDS)
            _kill_group(server.process.pid)
        engine.dispose()
        time.sleep(0.2)  # let the dropped connections close before the database is dropped
        delete_queue(broker_url, queue)


@pytest.fixture(scope="module", params=COMBINATIONS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    name: str = request.param
    data_dir = tmp_path_factory.mktemp(name)
    if name == "sqlite-local":
        with _local(data_dir, None, name) as deployed:
            yield deployed
        return
    if name.startswith("postgres-celery-"):
        broker = name.removeprefix("postgres-celery-")
        service, host, port, _ = BROKERS[broker]
        require_service(service, host, port)
        with postgres_database() as database_url, _celery(data_dir, database_url, broker, name) as deployed:
            yield deployed
        return
    with postgres_database() as database_url, _local(data_dir, database_url, name) as deployed:
        yield deployed
