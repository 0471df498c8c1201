"""Conditional GETs on real servers (SQLite and PostgreSQL): ETag, If-None-Match -> 304 without a
body, Cache-Control, a new ETag after every visible change, and the client reusing cached bodies."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conveyor.client import ConveyorClient
from tests.helpers import Server, start_server, wait_for, wait_status
from tests.helpers.api import JOBS, finished, submit, unique
from tests.helpers.backends import postgres_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with contextlib.ExitStack() as stack:
        env = {}
        if request.param == "postgresql":
            env["CONVEYOR_DATABASE_URL"] = stack.enter_context(postgres_database())
        started = start_server(tmp_path_factory.mktemp(f"etag-{request.param}"), extra_env=env)
        stack.callback(started.stop)
        yield started


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def tagged(response: httpx.Response) -> str:
    """The 200's weak ETag, checked with its Cache-Control."""
    assert response.status_code == 200, response.text
    etag = response.headers.get("etag")
    assert etag and etag.startswith('W/"') and etag.endswith('"'), response.headers
    assert response.headers.get("cache-control") == "no-cache", response.headers
    return etag


def assert_not_modified(client: httpx.Client, url: str, etag: str, **params: Any) -> None:
    response = client.get(url, params=params, headers={"If-None-Match": etag})
    assert response.status_code == 304, (response.status_code, response.text)
    assert response.content == b""
    assert response.headers.get("etag") == etag
    assert response.headers.get("cache-control") == "no-cache"


def changed(client: httpx.Client, url: str, old: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """After a change: the old tag gets a 200 with a new tag."""
    response = client.get(url, params=params, headers={"If-None-Match": old})
    etag = tagged(response)
    assert etag != old
    return etag, response.json()


def test_unchanged_detail_answers_304_and_if_none_match_forms(client: httpx.Client) -> None:
    job = finished(client, submit(client, name=unique("etag-detail"))["id"])
    url = f"{JOBS}{job['id']}/"
    first = client.get(url)
    etag = tagged(first)
    assert first.json() == job
    assert_not_modified(client, url, etag)
    assert tagged(client.get(url)) == etag  # stable while nothing changes
    for header in ("*", f'W/"nope", {etag}', f'"x,y",{etag}', etag.removeprefix("W/")):  # RFC 9110 lists
        response = client.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304 and response.content == b"", header
    for header in ('W/"nope"', "garbage", '"a", W/"b"'):
        assert tagged(client.get(url, headers={"If-None-Match": header})) == etag, header
    missing = client.get(f"{JOBS}999999999/", headers={"If-None-Match": "*"})
    assert missing.status_code == 404


def test_etag_follows_every_visible_change_during_a_run(client: httpx.Client) -> None:
    """Unconditional polls during a run: one ETag never stands for two bodies, and every state
    the job went through (counters, stages, logs, status) had its own tag."""
    job = submit(client, name=unique("etag-run"), n=6, config={"item_seconds": 0.15})
    url = f"{JOBS}{job['id']}/"
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(url)
        etag, body = tagged(response), response.json()
        canonical = json.dumps(body, sort_keys=True)
        assert seen.setdefault(etag, canonical) == canonical, "one ETag, two bodies"
        if body["status"] in {"SUCCESS", "FAILURE"}:
            break
        time.sleep(0.02)
    assert body["status"] == "SUCCESS"
    assert len(set(seen.values())) == len(seen) >= 3  # bodies and tags one to one, several states
    assert_not_modified(client, url, etag)


def test_status_change_cancel_and_new_log_line_change_the_detail_tag(
    server: Server, client: httpx.Client
) -> None:
    job = submit(client, name=unique("etag-status"), n=4, start_now=False, config={"item_seconds": 1})
    url = f"{JOBS}{job['id']}/"
    created = tagged(client.get(url))
    assert client.post(f"{url}run/").status_code == 200
    _, body = changed(client, url, created)
    assert body["status"] != "CREATED"
    wait_status(client, job["id"], {"STARTED"}, 30)
    started = tagged(client.get(url))
    assert client.post(f"{url}cancel/").status_code == 200
    _, body = changed(client, url, started)
    assert body["status"] in {"CANCELING", "REVOKED"}
    done = wait_status(client, job["id"], {"REVOKED"}, 30)
    final = tagged(client.get(url))
    assert client.get(url).json() == done
    # A log line alone (as the lease reaper writes one, without touching the job row's fields)
    # shows in the detail's recent logs, so it changes the tag.
    engine = sa.create_engine(
        server.env.get("CONVEYOR_DATABASE_URL") or f"sqlite:///{server.data_dir / 'conveyor.db'}"
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO job_logs (job_id, created_at, level, message) "
                    "VALUES (:j, CURRENT_TIMESTAMP, 'WARNING', 'etag-test line')"
                ),
                {"j": job["id"]},
            )
    finally:
        engine.dispose()
    _, body = changed(client, url, final)
    assert any("etag-test line" in line for line in body["progress"]["logs"])


def test_items_tag(client: httpx.Client) -> None:
    job = submit(client, name=unique("etag-items"), n=3, start_now=False)
    url = f"{JOBS}{job['id']}/items/"
    before = tagged(client.get(url))
    assert_not_modified(client, url, before)
    assert tagged(client.get(url, params={"limit": 2})) != before  # another page, another tag
    assert client.post(f"{JOBS}{job['id']}/run/").status_code == 200
    finished(client, job["id"])
    after, body = changed(client, url, before)
    assert {i["status"] for i in body["results"]} == {"SUCCESS"}
    assert_not_modified(client, url, after)
    bad = client.get(url, params={"status": "NOPE"}, headers={"If-None-Match": "*"})
    assert bad.status_code == 400  # a clear 4xx, even with a tag that would match


def test_history_tag_new_changed_and_deleted_jobs(client: httpx.Client) -> None:
    name = unique("etag-hist")
    params = {"search": name}
    first = finished(client, submit(client, name=f"{name}-1")["id"])
    tag = tagged(client.get(JOBS, params=params))
    assert_not_modified(client, JOBS, tag, **params)
    second = submit(client, name=f"{name}-2", start_now=False)  # a new job
    tag, page = changed(client, JOBS, tag, **params)
    assert page["count"] == 2
    assert client.post(f"{JOBS}{second['id']}/run/").status_code == 200  # a job on the page changes
    tag, _ = changed(client, JOBS, tag, **params)
    finished(client, second["id"])
    tag = tagged(client.get(JOBS, params=params))
    assert_not_modified(client, JOBS, tag, **params)
    assert client.delete(f"{JOBS}{first['id']}/").status_code == 204  # a deletion
    tag, page = changed(client, JOBS, tag, **params)
    assert [j["id"] for j in page["results"]] == [second["id"]]


class CountingTransport(httpx.BaseTransport):
    """A real HTTP transport that counts the statuses it saw (no mock: the server answers)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.statuses.append(response.status_code)
        return response

    def close(self) -> None:
        self.inner.close()


def test_client_polls_reuse_cached_bodies(server: Server, client: httpx.Client) -> None:
    transport = CountingTransport()
    with ConveyorClient(server.url, server.key, transport=transport) as conveyor:
        job = conveyor.submit(
            "test-delay", [{"kind": "text", "data": f"x{i}"} for i in range(4)], config={"item_seconds": 0.4}
        )
        transport.statuses.clear()
        final = conveyor.wait(job["id"], poll=0.05, timeout=60)
        assert final["status"] == "SUCCESS"
        polls = list(transport.statuses)
        assert polls.count(304) >= 3 and polls.count(200) >= 2, polls  # bodies reused between changes
        assert conveyor.get_job(job["id"]) == final == client.get(f"{JOBS}{job['id']}/").json()
        assert transport.statuses[-1] == 304
        for read in (lambda: conveyor.items(job["id"]), lambda: conveyor.list_jobs(search=job["name"])):
            transport.statuses.clear()
            assert read() == read()
            assert transport.statuses == [200, 304]
        assert wait_for(lambda: conveyor.list_jobs(search=job["name"])["count"] == 1, timeout=5)


def test_openapi_documents_the_304(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v2/jobs/",
        "/api/v2/jobs/{job_id}/",
        "/api/v2/jobs/{job_id}/items/",
        "/api/jobs/{job_identifier}",
    ):
        assert "304" in paths[path]["get"]["responses"], path
        assert "ETag" in paths[path]["get"]["description"], path


def test_modzy_job_object_answers_304_until_the_job_changes(server: Server, client: httpx.Client) -> None:
    """Modzy's ``GET /api/jobs/{id}``: the same weak ETag / If-None-Match / 304 as the native
    detail, a new tag after a change (here a retry of its failed item, then its run)."""
    job = submit(client, name=unique("etag-modzy"), n=2, config={"fail_names": ["item-0"]})
    done = finished(client, job["id"])
    assert done["failed"] == 1 and done["completed"] == 1, done
    url = f"/api/jobs/{job['job_identifier']}"
    first = client.get(url)
    etag = tagged(first)
    assert first.json()["jobIdentifier"] == job["job_identifier"] and first.json()["failed"] == 1
    assert_not_modified(client, url, etag)
    assert tagged(client.get(url)) == etag  # stable while nothing changes
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    assert tagged(client.get(url, headers={"If-None-Match": 'W/"nope"'})) == etag
    missing = client.get("/api/jobs/00000000-0000-0000-0000-000000000000", headers={"If-None-Match": "*"})
    assert missing.status_code == 404  # another account's job, or none: never a 304
    # The native tag of the same job is another one: the two bodies differ.
    assert tagged(client.get(f"{JOBS}{job['id']}/")) != etag

    assert client.post(f"{JOBS}{job['id']}/retry/").status_code == 200
    _, body = changed(client, url, etag)
    assert body["jobIdentifier"] == job["job_identifier"]
    finished(client, job["id"])
    final = client.get(url)
    assert final.json()["status"] == first.json()["status"]  # the same item fails again
    assert_not_modified(client, url, tagged(final))
