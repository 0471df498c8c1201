"""Chaos: processes killed, connections dropped, the broker restarted and the disk full mid-job.

Each test runs real processes on loopback and checks the same promise afterwards: the job ends
in a terminal state, every item is counted exactly once (the counters equal the item rows,
every written item was written once) and every successful item has its result.
``CONVEYOR_TEST_LONG=1`` runs bigger jobs with more kills.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import Server, alive, free_port, start_server, text_inputs, wait_for, wait_status
from tests.helpers.backends import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, postgres_database
from tests.helpers.celery import CeleryWorker, PrivateRedis, start_celery_server, start_worker
from tests.helpers.reliability import (
    FINISHED,
    LONG,
    assert_exactly_once,
    engine_items,
    kill_9,
    local_worker_pids,
    sqlite_items,
    submit,
)

ITEMS = 6000 if LONG else 2000
EMBEDDED = {"CONVEYOR_CHUNK_SIZE": "50"}


def _progress(client: httpx.Client, job_id: int) -> dict[str, object]:
    job: dict[str, object] = client.get(f"/api/v2/jobs/{job_id}/").json()
    return job


def test_kill_9_of_random_local_workers_during_a_2000_item_job(server_factory: Callable[..., Server]) -> None:
    server = server_factory(workers=2, extra_env=EMBEDDED)
    job = submit(server, ITEMS, name="chaos-workers", config={"item_seconds": 0.004, "batch_size": 10})
    rng = random.Random(8)
    killed: list[int] = []
    with server.client() as client:
        wait_for(lambda: _progress(client, job["id"])["completed"], 30, what="work to start")
        deadline = time.monotonic() + (240 if LONG else 90)
        while time.monotonic() < deadline:
            current = _progress(client, job["id"])
            if current["status"] in FINISHED:
                break
            if len(killed) < (20 if LONG else 6):
                candidates = [pid for pid in local_worker_pids(server) if pid not in killed]
                if candidates:
                    victim = rng.choice(candidates)
                    if kill_9(victim):
                        killed.append(victim)
            time.sleep(rng.uniform(0.7, 1.5))
        final = wait_status(client, job["id"], FINISHED, timeout=90)
        assert len(killed) >= 3, f"the job ended before the chaos could start ({len(killed)} kills)"
        assert final["status"] == "SUCCESS", final
        assert_exactly_once(final, sqlite_items(server.data_dir, job["id"]))
        # Every result is served by the API too.
        exported = client.get(f"/api/v2/jobs/{job['id']}/results/", params={"format": "jsonl"})
        assert exported.status_code == 200
        lines = [line for line in exported.text.splitlines() if line.strip()]
        assert len(lines) == ITEMS

        # The pool is whole again: every killed process was replaced and reported.
        def pool_whole() -> list[dict[str, object]] | None:
            workers: list[dict[str, object]] = client.get("/api/v2/workers/pool/").json()
            ok = all(w["alive"] and w["ready"] for w in workers)
            return workers if ok and sum(int(w["restarts"]) for w in workers) == len(killed) else None  # type: ignore[call-overload]

        wait_for(pool_whole, 20, what="every killed worker to be replaced")
        assert client.get("/readyz").status_code == 200
    assert not any(alive(pid) for pid in killed)


def test_kill_9_of_the_server_mid_job_loses_no_accepted_job(server_factory: Callable[..., Server]) -> None:
    server = server_factory(workers=2, extra_env=EMBEDDED)
    big = submit(server, 600, name="chaos-server-big", config={"item_seconds": 0.004, "batch_size": 10})
    accepted = [big["id"]]
    with server.client() as client:
        wait_for(lambda: _progress(client, big["id"])["completed"], 30, what="work to start")
        # More jobs accepted right before the crash: queued, not started, or just started.
        for i in range(4):
            accepted.append(
                submit(server, 50, name=f"chaos-server-{i}", config={"item_seconds": 0.002})["id"]
            )
    workers = local_worker_pids(server)
    assert len(workers) == 2
    kill_9(server.process.pid)
    server.process.wait(timeout=10)
    # The worker processes notice that their server is gone and exit instead of running on as
    # orphans (which would keep claiming work beside the restarted server's own pool).
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, what="orphaned workers to exit")
    restarted = start_server(server.data_dir, workers=2, extra_env=EMBEDDED, key=server.key)
    try:
        with restarted.client() as client:
            for job_id in accepted:
                final = wait_status(client, job_id, FINISHED, timeout=90)
                assert final["status"] == "SUCCESS", final
                assert_exactly_once(final, sqlite_items(restarted.data_dir, job_id))
            listed = client.get("/api/v2/jobs/", params={"limit": 100}).json()
            assert sorted(j["id"] for j in listed["results"]) == sorted(accepted)
    finally:
        restarted.stop()


# ---------------------------------------------------------------- PostgreSQL connections dropped


_CONNECTION_LOST = re.compile(
    r"terminating connection|closed the connection|connection .*(lost|closed)", re.IGNORECASE
)


def _terminate_backends(database_url: str) -> int:
    """Terminate every other session on the test's database (what a failover or an admin does)."""
    import psycopg

    name = database_url.rsplit("/", 1)[-1]
    admin = f"host={POSTGRES_HOST} port={POSTGRES_PORT} user={POSTGRES_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def test_postgres_connections_terminated_mid_run(tmp_path: Path) -> None:
    with postgres_database() as database_url:
        server = start_server(
            tmp_path / "data", workers=2, extra_env={**EMBEDDED, "CONVEYOR_DATABASE_URL": database_url}
        )
        engine = sa.create_engine(database_url)
        try:
            job = submit(server, 600, name="chaos-pg", config={"item_seconds": 0.004, "batch_size": 10})
            terminated = 0
            with server.client() as client:
                wait_for(lambda: _progress(client, job["id"])["completed"], 30, what="work to start")
                for _ in range(8 if LONG else 3):
                    if _progress(client, job["id"])["status"] in FINISHED:
                        break
                    terminated += _terminate_backends(database_url)
                    time.sleep(0.8)
                final = wait_status(client, job["id"], FINISHED, timeout=90)
                assert terminated >= 3
                assert final["status"] == "SUCCESS", final
                assert_exactly_once(final, engine_items(engine, job["id"]))
                # The API answers normally afterwards and a new job runs.
                after = submit(server, 20, name="chaos-pg-after")
                assert wait_status(client, after["id"], FINISHED, timeout=30)["status"] == "SUCCESS"
                assert client.get("/readyz").status_code == 200
            # Most dropped connections are replaced unnoticed (pre-ping); any that broke an operation
            # is logged as what it is, a lost connection, and nothing else went wrong.
            raised = re.findall(r"^[\w.]+(?:Error|Exception): .*$", server.log(), re.MULTILINE)
            unexplained = [line for line in raised if not _CONNECTION_LOST.search(line)]
            assert not unexplained, unexplained
        finally:
            server.stop()
            engine.dispose()
            time.sleep(0.2)


# ---------------------------------------------------------------- Celery: workers and broker


@dataclass
class CeleryCluster:
    server: Server
    redis: PrivateRedis
    queue: str
    engine: sa.Engine
    workers: list[CeleryWorker]

    def start_worker(self) -> CeleryWorker:
        worker = start_worker(
            self.server.env, self.queue, self.server.data_dir / f"worker-{len(self.workers)}.log"
        )
        self.workers.append(worker)
        return worker


@pytest.fixture(scope="module")
def celery_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryCluster]:
    """One cluster for the Celery tests of this module (a test may replace its worker)."""
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        pytest.fail("redis-server is not installed; the broker chaos tests start their own Redis")
    redis = PrivateRedis(free_port())
    redis.start()
    queue = f"conveyor-chaos-{uuid.uuid4().hex[:8]}"
    try:
        with postgres_database() as database_url:
            server = start_celery_server(
                tmp_path_factory.mktemp("celery-chaos"),
                database_url=database_url,
                broker_url=redis.url,
                queue=queue,
                extra_env={"CONVEYOR_CHUNK_SIZE": "25"},
            )
            cluster = CeleryCluster(server, redis, queue, sa.create_engine(database_url), [])
            try:
                cluster.start_worker()
                yield cluster
            finally:
                for worker in cluster.workers:
                    worker.stop()
                server.stop()
                cluster.engine.dispose()
                time.sleep(0.2)
    finally:
        redis.kill()


def test_kill_9_of_celery_worker_processes_mid_job(celery_cluster: CeleryCluster) -> None:
    cluster = celery_cluster
    n = 2000 if LONG else 1000
    job = submit(cluster.server, n, name="chaos-celery", config={"item_seconds": 0.004, "batch_size": 5})
    rng = random.Random(9)
    killed: list[int] = []
    with cluster.server.client() as client:
        wait_for(lambda: _progress(client, job["id"])["completed"], 30, what="work to start")
        for _ in range(8 if LONG else 3):  # pool processes, which Celery replaces
            time.sleep(rng.uniform(0.5, 1.0))
            pool = cluster.workers[-1].children()
            if pool and kill_9(rng.choice(pool)):
                killed.append(1)
        # ...and once the worker's main process: its pool goes with it, a new worker takes over.
        main = cluster.workers[-1]
        kill_9(main.pid)
        main.process.wait(timeout=10)
        cluster.start_worker()
        final = wait_status(client, job["id"], FINISHED, timeout=120)
    assert killed
    assert final["status"] == "SUCCESS", final
    assert_exactly_once(final, engine_items(cluster.engine, job["id"]))


def test_broker_restart_mid_job_loses_no_chunk(celery_cluster: CeleryCluster) -> None:
    cluster = celery_cluster
    job = submit(cluster.server, 1000, name="chaos-broker", config={"item_seconds": 0.004, "batch_size": 5})
    with cluster.server.client() as client:
        wait_for(lambda: _progress(client, job["id"])["completed"] >= 50, 30, what="work to start")
        cluster.redis.kill()  # every queued message is gone with it
        time.sleep(1.5)
        down = client.get("/readyz")
        assert down.status_code == 503, down.text
        during = submit(cluster.server, 50, name="chaos-broker-during")  # accepted while it is down
        cluster.redis.start()
        final = wait_status(client, job["id"], FINISHED, timeout=60)
        assert final["status"] == "SUCCESS", final
        assert_exactly_once(final, engine_items(cluster.engine, job["id"]))
        second = wait_status(client, during["id"], FINISHED, timeout=30)
        assert second["status"] == "SUCCESS", second
        assert_exactly_once(second, engine_items(cluster.engine, during["id"]))
        assert client.get("/readyz").status_code == 200


# ---------------------------------------------------------------- the data directory's disk full


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``: a real disk that fills up (ENOSPC)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for the disk-full test (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk has no space left."""
    filler = directory / "filler"
    block = b"\0" * (256 * 1024)
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_disk_full_gives_clear_errors_and_recovers_without_corruption(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "48m") as data_dir:
        server = start_server(data_dir, workers=2, extra_env=EMBEDDED, log_dir=tmp_path)
        try:
            job = submit(server, 400, name="disk-full", config={"item_seconds": 0.01})
            with server.client() as client:
                wait_for(lambda: _progress(client, job["id"])["completed"], 30, what="work to start")
                jobs_before = client.get("/api/v2/jobs/").json()["count"]
                filler = fill(data_dir)

                # A submission is refused with 507 and leaves nothing behind.
                refused = client.post(
                    "/api/v2/jobs/?start_now=true",
                    json={"name": "no room", "pipeline": "test-delay", "inputs": text_inputs(200)},
                )
                assert refused.status_code == 507, refused.text
                assert refused.json()["error"] == "insufficient_storage"
                assert "storage is full" in refused.json()["message"]
                # So is an upload, whose files are staged on the same disk.
                upload = client.post(
                    "/api/v2/jobs/upload/?start_now=true",
                    data={"job": json.dumps({"name": "no room", "pipeline": "test-delay"})},
                    files={"input": ("big.txt", b"x" * (2 * 1024 * 1024), "text/plain")},
                )
                assert upload.status_code == 507, upload.text
                assert upload.json()["error"] == "insufficient_storage"
                assert not any((data_dir / "tmp").glob("upload-*"))  # staged files removed
                # Workers cannot write results meanwhile: nothing moves, nothing is half-written.
                time.sleep(1.0)
                stalled = _progress(client, job["id"])
                time.sleep(1.0)
                assert _progress(client, job["id"])["completed"] == stalled["completed"]
                assert stalled["status"] == "STARTED"
                assert client.get("/api/v2/jobs/").json()["count"] == jobs_before

                filler.unlink()  # space is back
                final = wait_status(client, job["id"], FINISHED, timeout=60)
                assert final["status"] == "SUCCESS", final
                assert_exactly_once(final, sqlite_items(data_dir, job["id"]))
                after = submit(server, 20, name="room again")
                assert wait_status(client, after["id"], FINISHED, timeout=30)["status"] == "SUCCESS"
            log = server.log()
            assert "database or disk is full" in log  # the workers said why they could not write
            assert "storage full" in log  # and the API why it refused
        finally:
            server.stop()
        with sqlite3.connect(data_dir / "conveyor.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
