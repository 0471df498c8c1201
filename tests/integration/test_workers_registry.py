"""``GET /api/v2/workers/`` on real servers: local workers (a server with ``--workers 2``), a
worker that goes silent (SIGSTOP) shown lost and back, account scoping, and Celery workers on
PostgreSQL. The store verbs on both dialects are in ``test_workers_store.py``."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.settings import Settings
from conveyor.store import Store
from tests.helpers import Server, run_cli, submit_texts, wait_for, wait_status
from tests.helpers.backends import postgres_database, require_service
from tests.helpers.celery import BROKERS, delete_queue, start_celery_server, start_worker

HOST = socket.gethostname()
LOCAL_NAMES = {f"{HOST}/local-0", f"{HOST}/local-1"}


def listed(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/v2/workers/", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def local(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in listed(client, kind="local")}


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory(workers=2, extra_env={"CONVEYOR_CHUNK_SIZE": "5"})


@pytest.fixture
def store(server: Server) -> Iterator[Store]:
    """The server's own database, for rows of workers that are not running here."""
    opened = Store(Settings(data_dir=server.data_dir), pool_size=1)
    yield opened
    opened.close()


def test_local_workers_are_listed_with_their_job_and_items_done(server: Server) -> None:
    with server.client() as client:
        workers = wait_for(
            lambda: (found := local(client)) and set(found) == LOCAL_NAMES and found, 20, what="both workers"
        )
        for worker in workers.values():
            assert worker["kind"] == "local" and worker["host"] == HOST and worker["shared"] is True
            assert "test-delay" in worker["pipelines"] and "digits" in worker["pipelines"]
            assert worker["state"] == "idle" and worker["current_job_id"] is None
            assert worker["info"]["pid"] > 0 and worker["info"]["software"] == "conveyor"
        before = sum(w["items_done"] for w in workers.values())

        job = submit_texts(server, 30, name="registry-busy", config={"item_seconds": 0.1})
        busy = wait_for(
            lambda: [w for w in local(client).values() if w["state"] == "active"], 20, what="an active worker"
        )
        assert {w["current_job_id"] for w in busy} == {job["id"]}
        assert all(w["state"] == "active" for w in listed(client, state="active"))
        assert wait_status(client, job["id"], {"SUCCESS"}, timeout=60)["completed"] == 30

        # Idle again, every item counted once across the two workers.
        def settled() -> dict[str, dict[str, Any]] | None:
            found = local(client)
            idle = all(w["state"] == "idle" for w in found.values())
            return found if idle and sum(w["items_done"] for w in found.values()) == before + 30 else None

        after = wait_for(settled, 20, what="the workers idle with 30 more items done")
        assert all(w["current_job_id"] is None for w in after.values())
        assert listed(client, state="active", kind="local") == []
        # The CLI lists them too.
        done = run_cli(["workers", "--kind", "local"], server.env)
        assert done.returncode == 0, done.stderr
        assert all(name in done.stdout for name in LOCAL_NAMES) and "idle" in done.stdout
        # Bad filters are a clear 422, not an empty list.
        assert client.get("/api/v2/workers/", params={"state": "sleepy"}).status_code == 422


def test_a_silent_worker_is_lost_and_comes_back(server: Server) -> None:
    with server.client() as client:
        wait_for(lambda: set(local(client)) == LOCAL_NAMES, 20, what="both workers")
        pool = {w["slot"]: w["pid"] for w in client.get("/api/v2/workers/pool/").json()}
        victim = pool[1]
        os.kill(victim, signal.SIGSTOP)  # alive to the pool, silent to the registry
        try:
            lost = wait_for(
                lambda: local(client)[f"{HOST}/local-1"]["state"] == "lost", 15, what="the lost state"
            )
            assert lost
            assert [w["name"] for w in listed(client, state="lost")] == [f"{HOST}/local-1"]
            assert local(client)[f"{HOST}/local-0"]["state"] == "idle"
        finally:
            os.kill(victim, signal.SIGCONT)
        wait_for(lambda: local(client)[f"{HOST}/local-1"]["state"] == "idle", 15, what="it to come back")


def test_accounts_see_the_deployments_workers_and_only_their_own(server: Server, store: Store) -> None:
    other_key = server.create_key(account="registry-other", name="other")
    mine, _ = store.auth.ensure_defaults()
    theirs, _ = store.auth.ensure_account("registry-other")
    store.workers.seen("pull", "gpu01", host="gpu01", pipelines=["moths"], account_id=mine, info={"x": 1})
    store.workers.seen("http", "lab-box", host="lab", pipelines=["moths"], account_id=theirs, key_id=9)
    with server.client() as client, server.client(other_key) as other:
        wait_for(lambda: set(local(client)) == LOCAL_NAMES, 20, what="both workers")
        mine_seen = {(w["kind"], w["name"]) for w in listed(client)}
        theirs_seen = {(w["kind"], w["name"]) for w in listed(other)}
        locals_ = {("local", n) for n in LOCAL_NAMES}
        assert mine_seen == locals_ | {("pull", "gpu01")}
        assert theirs_seen == locals_ | {("http", "lab-box")}
        pull = listed(client, kind="pull")[0]
        assert (pull["shared"], pull["pipelines"], pull["info"], pull["state"]) == (
            False,
            ["moths"],
            {"x": 1},
            "idle",
        )

        # A deployment worker busy with my job: the other account sees it active, not my job's id.
        job = submit_texts(server, 20, name="registry-private", config={"item_seconds": 0.1})

        def active_for_both() -> bool:
            mine_active = [w for w in local(client).values() if w["current_job_id"] == job["id"]]
            their_view = {w["name"]: w for w in listed(other, kind="local")}
            return (
                bool(mine_active)
                and all(their_view[w["name"]]["state"] == "active" for w in mine_active)
                and all(w["current_job_id"] is None for w in their_view.values())
            )

        assert wait_for(active_for_both, 20, what="an active worker seen by both accounts")
        wait_status(client, job["id"], {"SUCCESS"}, timeout=60)
    # The helper behind an async_api job's "no live worker" stage message.
    assert store.workers.live_for("moths", mine, kinds=("pull",))
    assert not store.workers.live_for("moths", mine, kinds=("http",))
    assert store.workers.live_for("test-delay", theirs)


@pytest.fixture
def celery_deployment(tmp_path: Path) -> Iterator[tuple[Server, Any]]:
    name, host, port, broker_url = BROKERS["redis"]
    require_service(name, host, port)
    queue = f"conveyor-test-registry-{uuid.uuid4().hex[:10]}"
    with postgres_database() as database_url:
        server = start_celery_server(
            tmp_path,
            database_url=database_url,
            broker_url=broker_url,
            queue=queue,
            extra_env={"CONVEYOR_CHUNK_SIZE": "5"},
        )
        worker = None
        try:
            worker = start_worker(server.env, queue, tmp_path / "worker.log")
            yield server, worker
        finally:
            if worker is not None:
                worker.stop()
            server.stop()
            server.kill()
            delete_queue(broker_url, queue)


def test_celery_pool_processes_are_listed_and_stop(celery_deployment: tuple[Server, Any]) -> None:
    server, worker = celery_deployment
    with server.client() as client:
        pool = wait_for(
            lambda: (found := listed(client, kind="celery")) and len(found) == 2 and found,
            30,
            what="the pool",
        )
        names = sorted(w["name"] for w in pool)
        node = f"conveyor-{worker.pid}@{HOST}"
        assert names == [f"{node}/pool-0", f"{node}/pool-1"]
        assert {w["info"]["pid"] for w in pool} == set(worker.children())
        assert all(w["state"] == "idle" and "test-delay" in w["pipelines"] for w in pool)
        assert listed(client, kind="local") == []  # `serve --workers 0`

        job = submit_texts(server, 20, name="registry-celery", config={"item_seconds": 0.02})
        assert wait_status(client, job["id"], {"SUCCESS"}, timeout=60)["completed"] == 20
        wait_for(
            lambda: sum(w["items_done"] for w in listed(client, kind="celery")) == 20,
            20,
            what="20 items done across the pool",
        )
        worker.stop()

        def all_stopped() -> list[dict[str, Any]] | None:
            found = listed(client, kind="celery")
            return found if all(w["state"] == "stopped" for w in found) else None

        stopped = wait_for(all_stopped, 20, what="the pool stopped")
        assert sorted(w["name"] for w in stopped) == names
