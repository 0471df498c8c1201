"""Job actions through the native API: cancel, retry, delete, and unknown ids."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import Server, wait_for, wait_status
from tests.helpers.api import (
    JOBS,
    all_items,
    assert_error,
    count_named,
    finished,
    get_job,
    submit,
    unique,
)


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def test_cancel_a_created_job_revokes_it_at_once(client: httpx.Client) -> None:
    job = submit(client, name=unique("cancel-created"), n=3, start_now=False)
    response = client.post(f"{JOBS}{job['id']}/cancel/")
    assert response.status_code == 200, response.text
    canceled = response.json()
    assert canceled["status"] == "REVOKED"
    assert (canceled["pending"], canceled["canceled"], canceled["completed"]) == (0, 3, 0)
    assert canceled["finished_at"] is not None
    assert all(i["status"] == "CANCELED" for i in all_items(client, job["id"]))
    events = client.get(f"{JOBS}{job['id']}/transitions/").json()
    assert [e["to_status"] for e in events] == ["CREATED", "REVOKED"]
    # A revoked job can be neither run nor canceled again.
    assert_error(client.post(f"{JOBS}{job['id']}/run/"), 409)
    assert_error(client.post(f"{JOBS}{job['id']}/cancel/"), 409)


def test_cancel_a_running_job(client: httpx.Client) -> None:
    job = submit(client, name=unique("cancel-running"), n=40, config={"item_seconds": 0.1})
    wait_for(lambda: get_job(client, job["id"])["completed"] > 0, timeout=30, what="first item done")
    asked = time.monotonic()
    response = client.post(f"{JOBS}{job['id']}/cancel/")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"CANCELING", "REVOKED"}
    done = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
    # Issue 3: running workers stop within 2 s (plus a little for polling), not by the sweeper's grace.
    assert time.monotonic() - asked < 2.5, "workers did not stop within ~2 s"
    revoked = client.get(f"{JOBS}{job['id']}/transitions/").json()[-1]
    assert revoked["to_status"] == "REVOKED"
    assert "did not stop" not in revoked["cause"], revoked
    events = [e["to_status"] for e in client.get(f"{JOBS}{job['id']}/transitions/").json()]
    assert events == ["CREATED", "PENDING", "STARTED", "CANCELING", "REVOKED"]
    assert done["pending"] == 0
    assert done["completed"] + done["failed"] + done["canceled"] == done["total"]
    assert 0 < done["completed"] < done["total"] and done["canceled"] > 0
    items = all_items(client, job["id"])
    assert sum(i["status"] == "SUCCESS" for i in items) == done["completed"]
    assert sum(i["status"] == "CANCELED" for i in items) == done["canceled"]
    time.sleep(0.5)  # a late worker write must not change a revoked job
    assert get_job(client, job["id"])["completed"] == done["completed"]


def test_cancel_a_finished_job_is_409(client: httpx.Client) -> None:
    job = submit(client, name=unique("cancel-done"), n=2)
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    body = assert_error(client.post(f"{JOBS}{job['id']}/cancel/"), 409)
    assert "SUCCESS" in body["message"]
    assert get_job(client, job["id"])["status"] == "SUCCESS"


def test_retry_without_failed_items_is_409(client: httpx.Client) -> None:
    job = submit(client, name=unique("retry-nothing"), n=2)
    assert finished(client, job["id"])["status"] == "SUCCESS"
    assert_error(client.post(f"{JOBS}{job['id']}/retry/"), 409)
    running = submit(client, name=unique("retry-running"), n=20, config={"item_seconds": 0.1})
    assert_error(client.post(f"{JOBS}{running['id']}/retry/"), 409)
    client.post(f"{JOBS}{running['id']}/cancel/")
    created = submit(client, name=unique("retry-created"), n=1, start_now=False)
    assert_error(client.post(f"{JOBS}{created['id']}/retry/"), 409)
    client.post(f"{JOBS}{created['id']}/cancel/")


@pytest.mark.parametrize(
    ("failing", "first_status"),
    [(["item-1", "item-3"], "SUCCESS"), (["item-0", "item-1", "item-2", "item-4"], "FAILURE")],
    ids=["within-policy", "over-policy"],
)
def test_retry_reruns_only_the_failed_items(
    client: httpx.Client, failing: list[str], first_status: str
) -> None:
    job = submit(client, name=unique("retry"), n=6, config={"fail_names": failing})
    done = finished(client, job["id"])
    assert done["status"] == first_status
    assert (done["completed"], done["failed"], done["canceled"]) == (6 - len(failing), len(failing), 0)
    before = {i["name"]: i for i in all_items(client, job["id"])}
    assert all(i["attempts"] == 1 for i in before.values())

    response = client.post(f"{JOBS}{job['id']}/retry/")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"RETRY", "SUCCESS", "FAILURE"}
    # The config still names the same items, so they fail again: the outcome must be the same.
    wait_for(
        lambda: any(e["to_status"] == "RETRY" for e in client.get(f"{JOBS}{job['id']}/transitions/").json()),
        timeout=10,
        what="RETRY transition",
    )
    again = finished(client, job["id"])
    assert again["status"] == first_status
    assert again["pending"] == 0
    assert (again["completed"], again["failed"], again["canceled"]) == (6 - len(failing), len(failing), 0)
    after = {i["name"]: i for i in all_items(client, job["id"])}
    for name, item in after.items():
        if name in failing:
            assert item["attempts"] == 2 and item["status"] == "FAILURE", item
        else:
            # Untouched: not re-run, same result and timings.
            assert item["attempts"] == 1 and item["status"] == "SUCCESS", item
            assert item["finished_at"] == before[name]["finished_at"]
            assert item["result"] == before[name]["result"]
    events = [e["to_status"] for e in client.get(f"{JOBS}{job['id']}/transitions/").json()]
    assert events == ["CREATED", "PENDING", "STARTED", first_status, "RETRY", first_status]


def test_delete_a_finished_job(client: httpx.Client) -> None:
    name = unique("delete")
    job = submit(client, name=name, n=3)
    assert finished(client, job["id"])["status"] == "SUCCESS"
    assert count_named(client, name) == 1
    response = client.delete(f"{JOBS}{job['id']}/")
    assert response.status_code == 204, response.text
    assert response.content == b""
    for suffix in ("", "items/", "logs/", "transitions/", "results/"):
        assert_error(client.get(f"{JOBS}{job['id']}/{suffix}"), 404)
    assert_error(client.delete(f"{JOBS}{job['id']}/"), 404)
    assert count_named(client, name) == 0


def test_delete_a_created_job(client: httpx.Client) -> None:
    job = submit(client, name=unique("delete-created"), n=1, start_now=False)
    assert client.delete(f"{JOBS}{job['id']}/").status_code == 204
    assert_error(client.get(f"{JOBS}{job['id']}/"), 404)


def test_delete_a_running_job_is_409(client: httpx.Client) -> None:
    job = submit(client, name=unique("delete-running"), n=20, config={"item_seconds": 0.1})
    body = assert_error(client.delete(f"{JOBS}{job['id']}/"), 409)
    assert body["error"]
    assert get_job(client, job["id"])["status"] in {"PENDING", "STARTED"}
    assert client.post(f"{JOBS}{job['id']}/cancel/").status_code == 200
    wait_status(client, job["id"], {"REVOKED"}, timeout=10)
    assert client.delete(f"{JOBS}{job['id']}/").status_code == 204


def test_unknown_job_id_is_404_everywhere(client: httpx.Client) -> None:
    missing = 2_000_000_000
    url = f"{JOBS}{missing}/"
    for method, path in (
        ("GET", url),
        ("DELETE", url),
        ("POST", url + "run/"),
        ("POST", url + "cancel/"),
        ("POST", url + "retry/"),
        ("GET", url + "items/"),
        ("GET", url + "logs/"),
        ("GET", url + "transitions/"),
        ("GET", url + "results/"),
    ):
        body = assert_error(client.request(method, path), 404)
        assert body["error"] == "not_found", (method, path, body)
