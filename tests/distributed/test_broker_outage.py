"""A submission never fails because the broker is down: its chunks are sent when it comes back."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import free_port, text_inputs, wait_status
from tests.helpers.backends import postgres_database
from tests.helpers.celery import PrivateRedis, start_celery_server, start_worker


def test_jobs_submitted_while_the_broker_is_down_run_once_it_is_back(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; the outage test starts its own Redis")
    broker = PrivateRedis(free_port())
    queue = f"conveyor-outage-{uuid.uuid4().hex[:8]}"
    with postgres_database() as database_url:
        server = start_celery_server(
            tmp_path / "data",
            database_url=database_url,
            broker_url=broker.url,
            queue=queue,
            extra_env={"CONVEYOR_CHUNK_SIZE": "4"},
            ready_path="/livez",  # not ready: its broker is down
        )
        worker = None
        try:
            with server.client() as client:
                response = client.post(
                    "/api/v2/jobs/?start_now=true",
                    json={"name": "outage", "pipeline": "test-delay", "inputs": text_inputs(10)},
                )
                assert response.status_code == 201, response.text  # the job is stored, not lost
                job_id = response.json()["id"]
                time.sleep(0.5)
                assert client.get(f"/api/v2/jobs/{job_id}/").json()["status"] == "PENDING"
                down = client.get("/readyz")
                assert down.status_code == 503, down.text
                assert down.json()["checks"]["broker"].startswith("error"), down.text
                broker.start()
                worker = start_worker(server.env, queue, tmp_path / "worker.log")
                final = wait_status(client, job_id, {"SUCCESS", "FAILURE"}, timeout=60)
                back = client.get("/readyz")
                assert back.status_code == 200, back.text
                assert back.json()["checks"]["broker"] == "ok"
            assert (final["status"], final["completed"]) == ("SUCCESS", 10)
        finally:
            if worker is not None:
                worker.stop()
            server.stop()
            broker.kill()
