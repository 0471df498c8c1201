"""Distributed mode end to end: PostgreSQL + Celery workers, on Redis and on RabbitMQ.

Every test runs once per broker (the ``cluster`` fixture is parametrized) against real
processes: `conveyor serve --workers 0` publishes one task per chunk, `conveyor worker`
runs them in a prefork pool.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TERMINAL_STATUSES as FINISHED
from tests.helpers import assert_counters_match_rows, run_cli, submit_texts, wait_for, wait_status
from tests.helpers.api import all_items, unique
from tests.helpers.celery import WORKER_CONCURRENCY, Cluster, start_worker
from tests.integration.test_remote_services import image_inputs
from tests.processing_service import ProcessingService


def submit(cluster: Cluster, n: int, *, name: str, **body: Any) -> dict[str, Any]:
    return submit_texts(cluster.server, n, name=name, **body)


def job_detail(cluster: Cluster, job_id: int) -> dict[str, Any]:
    with cluster.server.client() as client:
        detail: dict[str, Any] = client.get(f"/api/v2/jobs/{job_id}/").json()
    return detail


def assert_counters_match_items(cluster: Cluster, job: dict[str, Any]) -> None:
    assert_counters_match_rows(job, cluster.items(job["id"]))


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def task_runs(cluster: Cluster, job_id: int) -> dict[int, int]:
    """How many times the worker ran a task that claimed each chunk of the job (from its log)."""
    return task_runs_in(cluster.worker.log(), job_id)


def task_runs_in(log: str, job_id: int) -> dict[int, int]:
    runs: dict[int, int] = {}
    for match in re.finditer(rf"run_chunk chunk=(\d+) job={job_id} ", log):
        chunk_id = int(match.group(1))
        runs[chunk_id] = runs.get(chunk_id, 0) + 1
    return runs


def test_a_job_completes_with_one_task_per_chunk(cluster: Cluster) -> None:
    job = submit(cluster, 25, name=f"celery-{cluster.broker}")
    with cluster.server.client() as client:
        final = wait_status(client, job["id"], FINISHED, timeout=30)
    assert final["status"] == "SUCCESS"
    assert final["dispatch_mode"] == "celery"
    assert (final["total"], final["completed"], final["failed"], final["canceled"]) == (25, 25, 0, 0)
    assert_counters_match_items(cluster, final)
    assert [attempts for _, _, attempts in cluster.items(job["id"])] == [1] * 25
    chunks = cluster.chunks(job["id"])
    assert [(kind, status, attempts) for _, kind, status, attempts, _ in chunks] == [("items", "DONE", 1)] * 5
    # Each chunk was claimed and run by exactly one task; no item-level tasks exist.
    runs = wait_for(lambda: task_runs(cluster, job["id"]) or None, 5, what="task log lines")
    assert runs == {chunk_id: 1 for chunk_id, *_ in chunks}


def test_the_delay_stage_releases_item_chunks_to_the_broker(cluster: Cluster) -> None:
    job = submit(cluster, 10, name="celery-delay", delay=0.5)
    with cluster.server.client() as client:
        final = wait_status(client, job["id"], FINISHED, timeout=30)
    assert final["status"] == "SUCCESS"
    assert final["completed"] == 10
    kinds = [(kind, status) for _, kind, status, _, _ in cluster.chunks(job["id"])]
    assert kinds == [("delay", "DONE"), ("items", "DONE"), ("items", "DONE")]


def test_a_worker_limited_to_other_pipelines_hands_chunks_back(cluster: Cluster) -> None:
    digits_only = start_worker(
        cluster.server.env,
        cluster.queue,
        cluster.worker.log_path.with_suffix(".digits.log"),
        pipelines="digits",
    )
    try:
        job = submit(cluster, 25, name="celery-pipelines", config={"item_seconds": 0.02})
        with cluster.server.client() as client:
            final = wait_status(client, job["id"], FINISHED, timeout=60)  # two workers start under load
        assert final["status"] == "SUCCESS"
        assert final["completed"] == 25
        # Every chunk ran on the worker that serves test-delay; the digits-only one ran none.
        assert not task_runs_in(digits_only.log(), job["id"])
        # A task logs its run after the write-back that finished the job: wait for the last line.
        wait_for(lambda: sum(task_runs(cluster, job["id"]).values()) >= 5, 10, what="the tasks' log lines")
        assert sum(task_runs(cluster, job["id"]).values()) == 5
    finally:
        digits_only.stop()


def test_cancel_stops_running_workers_and_keeps_counters_consistent(cluster: Cluster) -> None:
    job = submit(cluster, 200, name="celery-cancel", config={"item_seconds": 0.05})
    with cluster.server.client() as client:
        wait_for(lambda: job_detail(cluster, job["id"])["completed"] >= 4, 30, what="work to start")
        response = client.post(f"/api/v2/jobs/{job['id']}/cancel/")
        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("CANCELING", "REVOKED")
        final = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
        canceled_at = next(
            e
            for e in client.get(f"/api/v2/jobs/{job['id']}/transitions/").json()
            if e["to_status"] in ("CANCELING", "REVOKED")
        )
    # Server-side clock: from the cancel request to REVOKED (every worker let go of its chunk).
    assert (ts(final["finished_at"]) - ts(canceled_at["created_at"])).total_seconds() < 2.0
    assert final["canceled"] > 0
    assert_counters_match_items(cluster, final)
    snapshot = cluster.items(job["id"])
    time.sleep(0.5)
    assert cluster.items(job["id"]) == snapshot  # no worker is still writing


def test_kill_9_of_a_celery_worker_process_mid_chunk_loses_and_doubles_nothing(cluster: Cluster) -> None:
    job = submit(cluster, 40, name="celery-kill-9", config={"item_seconds": 0.1})
    children = cluster.worker.children()
    assert len(children) == WORKER_CONCURRENCY

    def a_leased_chunk_of_a_pool_process() -> tuple[int, int] | None:
        if job_detail(cluster, job["id"])["completed"] < 3:
            return None
        for chunk_id, _, status, _, leased_by in cluster.chunks(job["id"]):
            pid = int(leased_by.rsplit(":", 1)[-1]) if leased_by else 0
            if status == "LEASED" and pid in children:
                return chunk_id, pid
        return None

    chunk_id, victim = wait_for(a_leased_chunk_of_a_pool_process, 30, what="a pool process mid-chunk")
    os.kill(victim, signal.SIGKILL)
    with cluster.server.client() as client:
        final = wait_status(client, job["id"], FINISHED, timeout=60)
        logs = client.get(f"/api/v2/jobs/{job['id']}/logs/", params={"level": "WARNING", "limit": 100}).json()
    assert final["status"] == "SUCCESS"
    assert (final["completed"], final["failed"], final["canceled"]) == (40, 0, 0)
    assert_counters_match_items(cluster, final)
    # Exactly once: every item was written back one time, none twice.
    assert [attempts for _, _, attempts in cluster.items(job["id"])] == [1] * 40
    # The killed process's chunk came back when its lease expired and ran a second time.
    attempts = {cid: n for cid, _, _, n, _ in cluster.chunks(job["id"])}
    assert attempts[chunk_id] == 2
    assert any(f"chunk {chunk_id} expired" in line["message"] for line in logs["results"])

    # Celery replaced the dead pool process.
    def full_pool() -> bool:
        now = cluster.worker.children()
        return len(now) == WORKER_CONCURRENCY and victim not in now

    wait_for(full_pool, 10, what="a replacement pool process")


def test_timeout_ends_the_job_timedout_and_keeps_finished_items(cluster: Cluster) -> None:
    job = submit(cluster, 100, name="celery-timeout", timeout=1500, config={"item_seconds": 0.05})
    with cluster.server.client() as client:
        final = wait_status(client, job["id"], FINISHED, timeout=20)
    assert final["status"] == "TIMEDOUT"
    overdue = (ts(final["finished_at"]) - ts(final["submitted_at"])).total_seconds()
    assert 1.5 <= overdue < 2.5
    assert final["completed"] > 0 and final["canceled"] > 0
    assert_counters_match_items(cluster, final)


def test_sigterm_stops_the_worker_promptly_and_hands_its_chunks_back(cluster: Cluster) -> None:
    job = submit(cluster, 10, name="celery-sigterm", config={"item_seconds": 1.0})  # 2 chunks of 5 s
    wait_for(lambda: job_detail(cluster, job["id"])["completed"] >= 1, 30, what="work to start")
    worker = cluster.worker
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = worker.process.wait(timeout=15)
    stopped_in = time.monotonic() - started
    assert code == 0, worker.log()[-3000:]
    # The pool processes gave their chunks back instead of running them to the end.
    assert stopped_in < 4.0
    assert worker.log().count("stop=shutdown") == 2
    halfway = job_detail(cluster, job["id"])
    assert halfway["status"] == "STARTED" and 0 < halfway["completed"] < 10
    assert {status for _, _, status, _, _ in cluster.chunks(job["id"])} <= {"QUEUED", "DONE"}
    # A new worker takes the handed-back chunks over; nothing is lost or counted twice.
    cluster.worker = start_worker(cluster.server.env, cluster.queue, worker.log_path.with_suffix(".2.log"))
    with cluster.server.client() as client:
        final = wait_status(client, job["id"], FINISHED, timeout=30)
    assert final["status"] == "SUCCESS"
    assert final["completed"] == 10
    assert_counters_match_items(cluster, final)
    assert [attempts for _, _, attempts in cluster.items(job["id"])] == [1] * 10


def test_worker_without_a_broker_url_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_BROKER_URL"}
    done = run_cli(["worker"], {**env, "CONVEYOR_DATA_DIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 2
    assert "CONVEYOR_BROKER_URL is not set" in done.stderr


# --------------------------------------------------------------------------- remote processing services
@pytest.fixture(scope="module")
def service() -> Iterator[ProcessingService]:
    started = ProcessingService().start()
    yield started
    started.stop()


def test_celery_workers_run_remote_pipelines_once_told_the_media_url(
    cluster: Cluster, service: ProcessingService
) -> None:
    with cluster.server.client() as client:
        registered = client.post(
            "/api/v2/processing-services/", json={"endpoint_url": service.url, "name": unique("celery")}
        )
        assert registered.status_code == 201, registered.text
        slug = f"remote:{registered.json()['name']}/brightness"

        def run() -> dict[str, object]:
            created = client.post(
                "/api/v2/jobs/?start_now=true",
                json={"name": unique("remote"), "pipeline": slug, "inputs": image_inputs(bright=3, dark=3)},
            )
            assert created.status_code == 201, created.text
            return wait_status(client, created.json()["id"], FINISHED, timeout=60)

        # The fixture's worker has no CONVEYOR_MEDIA_BASE_URL: every item fails and says what to set.
        unset = run()
        # (Items not yet run when the failure budget was spent are CANCELED, without an error.)
        errors = {i["error"] for i in all_items(client, int(str(unset["id"]))) if i["status"] == "FAILURE"}
        assert unset["status"] == "FAILURE" and len(errors) == 1, errors
        assert "set CONVEYOR_MEDIA_BASE_URL" in errors.pop()

        cluster.worker.stop()
        env = {**cluster.server.env, "CONVEYOR_MEDIA_BASE_URL": cluster.server.url}
        cluster.worker = start_worker(env, cluster.queue, cluster.server.data_dir / "worker-media.log")
        job = run()
        items = all_items(client, int(str(job["id"])))
    assert job["status"] == "SUCCESS", [i["error"] for i in items]
    assert sorted(i["result"]["labels"][0] for i in items) == ["bright"] * 3 + ["dark"] * 3
    assert_counters_match_rows(job, cluster.items(int(str(job["id"]))))
