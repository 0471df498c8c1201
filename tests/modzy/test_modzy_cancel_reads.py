"""Modzy cancel reads CANCELED at once, while the job is still CANCELING, and after REVOKED.

The server runs without workers; the test holds the job's chunk lease itself through the store
(the verbs a worker uses), so the job stays CANCELING exactly as long as the test wants: what the
published ``modzy-sdk`` (unmodified) and raw HTTP see in that window is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conveyor.domain.access import Scope, scope_of
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.chunks import Claim
from modzy import ApiClient
from tests.helpers import Server, start_server
from tests.helpers.api import unique

LEASE_SECONDS = 600  # the test's own claim never expires during the test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("modzy-cancel"),
        workers=0,  # nothing runs the jobs but the test's own claims
        extra_env={"CONVEYOR_CANCEL_GRACE_SECONDS": "600"},  # the sweeper never forces the cancel
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def store(server: Server) -> Iterator[Store]:
    opened = Store(Settings(data_dir=server.data_dir), pool_size=1)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def scope(server: Server, store: Store) -> Scope:
    return scope_of(store.auth.authenticate(server.key))


def _canonical(store: Store, scope: Scope, identifier: str) -> str:
    return str(store.jobs.detail(scope, uuid=identifier).row["status"])


def _running_job(client: ApiClient, store: Store, scope: Scope) -> tuple[str, Claim]:
    """A Modzy text job whose only chunk the test holds: STARTED, IN_PROGRESS to Modzy."""
    job = client.jobs.submit_text("test-delay", "1", {"a": {"input": "x"}, "b": {"input": "y"}})
    identifier = job.job_identifier
    claim = store.chunks.claim(unique("test-worker"), LEASE_SECONDS)
    assert claim is not None
    assert claim.job_id == store.jobs.detail(scope, uuid=identifier).row["id"]
    assert _canonical(store, scope, identifier) == "STARTED"
    assert client.jobs.get(identifier).status == "IN_PROGRESS"
    return identifier, claim


def test_sdk_cancel_of_a_running_job_reads_canceled_while_canceling(
    client: ApiClient, store: Store, scope: Scope
) -> None:
    identifier, claim = _running_job(client, store, scope)
    answer = client.jobs.cancel(identifier)
    assert answer.status == "CANCELED"
    assert _canonical(store, scope, identifier) == "CANCELING"  # a worker still holds its chunk
    # The sdk's own wait returns at once: CANCELED is done for a Modzy client.
    done = client.jobs.block_until_complete(identifier, timeout=10, poll_interval=0.05)
    assert done.status == "CANCELED"
    assert client.results.get(identifier).finished is True
    assert {j.jobIdentifier for j in client.jobs.get_history(status="CANCELED", per_page=100)} >= {identifier}
    assert identifier not in {
        j.jobIdentifier for j in client.jobs.get_history(status="pending", per_page=100)
    }
    assert _canonical(store, scope, identifier) == "CANCELING"

    store.chunks.release(claim, requeue=False)  # the worker stops: the job is REVOKED
    assert _canonical(store, scope, identifier) == "REVOKED"
    after = client.jobs.get(identifier)
    assert after.status == "CANCELED" and after.finishedAt is not None
    assert client.results.get(identifier).finished is True


def test_raw_delete_answers_canceled_and_every_read_follows(
    server: Server, client: ApiClient, store: Store, scope: Scope
) -> None:
    identifier, claim = _running_job(client, store, scope)
    with httpx.Client(
        base_url=f"{server.url}/api", headers={"Authorization": f"ApiKey {server.key}"}, timeout=30
    ) as http:
        answer = http.delete(f"/jobs/{identifier}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "CANCELED" and answer.json()["jobIdentifier"] == identifier
        assert _canonical(store, scope, identifier) == "CANCELING"
        for _ in range(3):
            read = http.get(f"/jobs/{identifier}")
            assert read.status_code == 200 and read.json()["status"] == "CANCELED"
            assert read.json()["finishedAt"] is None  # set when the workers have stopped
        assert http.get(f"/results/{identifier}").json()["finished"] is True
        assert http.delete(f"/jobs/{identifier}").json()["status"] == "CANCELED"  # again: no change
        with server.client() as native:  # the native dialect keeps the canonical state
            (row,) = [
                j
                for j in native.get("/api/v2/jobs/", params={"status": "CANCELING", "limit": 100}).json()[
                    "results"
                ]
                if j["job_identifier"] == identifier
            ]
            assert row["status"] == "CANCELING"

        store.chunks.release(claim, requeue=False)
        final = http.get(f"/jobs/{identifier}").json()
        assert final["status"] == "CANCELED" and final["finishedAt"] is not None
        assert _canonical(store, scope, identifier) == "REVOKED"


def test_cancel_of_a_queued_job_is_canceled_at_once(
    server: Server, client: ApiClient, store: Store, scope: Scope
) -> None:
    job = client.jobs.submit_text("test-delay", "1", {"a": {"input": "x"}})  # queued: no worker claims it
    assert client.jobs.get(job.job_identifier).status == "SUBMITTED"
    assert client.jobs.cancel(job.job_identifier).status == "CANCELED"
    assert _canonical(store, scope, job.job_identifier) == "REVOKED"
    assert client.results.get(job.job_identifier).finished is True
