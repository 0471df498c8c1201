"""Live job events (Server-Sent Events): follow, resume without loss, auth, tenants, shutdown."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import insert

from conveyor.clock import utcnow
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.tables import accounts
from tests.helpers import Server
from tests.helpers.api import JOBS, all_logs, assert_error, finished, submit, unique
from tests.sse import SseEvent, SseReader

SLOW = {"config": {"item_seconds": 0.15}}


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def project_key(shared_server: Server) -> str:
    return shared_server.create_key(role="member", project=unique("sse-proj"), name="sse-bound")


def cursor(event: SseEvent) -> tuple[int, int]:
    assert event.id is not None
    event_id, log_id = event.id.split(".")
    return int(event_id), int(log_id)


def job_events_path(job_id: int) -> str:
    return f"{JOBS}{job_id}/events/"


def other_account_key(server: Server) -> str:
    """An owner key of a second account (the CLI only makes keys in the default account)."""
    store = Store(Settings(data_dir=server.data_dir))
    try:
        with store.db.write() as conn:
            account_id = conn.execute(
                insert(accounts)
                .values(slug=unique("acct"), name="Other account", created_at=utcnow())
                .returning(accounts.c.id)
            ).scalar_one()
        project_id = store.auth.ensure_project(account_id, "main")
        return store.auth.create_key(
            account_id=account_id, name="other", role="owner", project_id=project_id
        ).token
    finally:
        store.close()


def test_a_job_stream_follows_status_counters_and_logs_live(
    shared_server: Server, client: httpx.Client
) -> None:
    job = submit(client, name=unique("sse-follow"), n=5, start_now=False, **SLOW)
    with SseReader(shared_server.url, job_events_path(job["id"]), key=shared_server.key) as reader:
        first = reader.wait(lambda e: e.event == "job", what="the initial job snapshot")
        assert first.data["id"] == job["id"] and first.data["status"] == "CREATED"
        assert client.post(f"{JOBS}{job['id']}/run/").status_code == 200
        last = reader.wait(
            lambda e: e.event == "job" and e.data["status"] == "SUCCESS", what="the job's SUCCESS snapshot"
        )
        assert last.data["completed"] == 5 and last.data["pending"] == 0
        assert last.data["progress"]["summary"]["progress"] == 1.0
        reader.wait(
            lambda e: e.event == "log" and "Finished job" in e.data["message"], what="the last log line"
        )
        events = reader.snapshot()

    assert [e.data["to_status"] for e in events if e.event == "status"] == ["PENDING", "STARTED", "SUCCESS"]
    snapshots = [e.data for e in events if e.event == "job"]
    completed = [s["completed"] for s in snapshots]
    assert completed == sorted(completed) and len(set(completed)) >= 3, completed  # progress seen live
    assert {e.data["job_id"] for e in events if e.event in ("status", "log")} == {job["id"]}
    cursors = [cursor(e) for e in events]
    assert cursors == sorted(cursors)
    logged = [e.data["id"] for e in events if e.event == "log"]
    assert logged == sorted(set(logged))
    # Every line logged after the stream opened arrived, in order.
    assert logged == [r["id"] for r in all_logs(client, job["id"]) if r["id"] > cursor(first)[1]]


def test_last_event_id_replays_everything_missed(shared_server: Server, client: httpx.Client) -> None:
    job = submit(client, name=unique("sse-resume"), n=3, start_now=False)
    with SseReader(shared_server.url, job_events_path(job["id"]), key=shared_server.key) as reader:
        first = reader.wait(lambda e: e.event == "job")
    # Disconnected: the job runs to the end unobserved.
    assert client.post(f"{JOBS}{job['id']}/run/").status_code == 200
    assert finished(client, job["id"])["status"] == "SUCCESS"
    seen_event, seen_log = cursor(first)
    transitions = [t for t in client.get(f"{JOBS}{job['id']}/transitions/").json() if t["id"] > seen_event]
    logs = [r for r in all_logs(client, job["id"]) if r["id"] > seen_log]
    assert [t["to_status"] for t in transitions] == ["PENDING", "STARTED", "SUCCESS"]

    for how in ("header", "query"):
        headers = {"Last-Event-ID": first.id or ""} if how == "header" else None
        params = {"last_event_id": first.id or ""} if how == "query" else None
        with SseReader(
            shared_server.url,
            job_events_path(job["id"]),
            key=shared_server.key,
            headers=headers,
            params=params,
        ) as resumed:
            resumed.wait(lambda e: e.event == "job" and e.data["status"] == "SUCCESS")
            replayed = resumed.snapshot()
        assert [e.data["id"] for e in replayed if e.event == "status"] == [t["id"] for t in transitions]
        assert [e.data["id"] for e in replayed if e.event == "log"] == [r["id"] for r in logs]
        assert cursor(replayed[-1]) == (transitions[-1]["id"], logs[-1]["id"])


def test_streams_need_a_key_given_by_header_query_or_cookie(
    shared_server: Server, client: httpx.Client
) -> None:
    job = submit(client, name=unique("sse-auth"), n=1, start_now=False)
    path = job_events_path(job["id"])
    assert_error(httpx.get(shared_server.url + path, timeout=10), 401)
    assert_error(httpx.get(shared_server.url + path, params={"key": "nope.nope"}, timeout=10), 401)
    assert_error(httpx.get(shared_server.url + "/api/v2/events/", timeout=10), 401)
    viewer = shared_server.create_key(role="viewer", name="sse-viewer")
    for kwargs in ({"params": {"key": viewer}}, {"cookies": {"conveyor_key": viewer}}):
        with SseReader(shared_server.url, path, **kwargs) as reader:  # type: ignore[arg-type]
            snapshot = reader.wait(lambda e: e.event == "job")
            assert reader.status_code == 200
        assert snapshot.data["id"] == job["id"]
        assert snapshot.data["user_permissions"] == ["view"]
    assert_error(client.get(f"{JOBS}999999999/events/"), 404)
    client.post(f"{JOBS}{job['id']}/cancel/")


def test_a_key_sees_only_its_own_tenant(
    shared_server: Server, client: httpx.Client, project_key: str
) -> None:
    other = other_account_key(shared_server)
    mine = submit(client, name=unique("sse-mine"), n=2, start_now=False)
    with shared_server.client(other) as other_client:
        assert_error(other_client.get(job_events_path(mine["id"])), 404)
        theirs = submit(other_client, name=unique("sse-theirs"), n=2, start_now=False)
    with shared_server.client(project_key) as bound:
        bound_project = bound.get("/api/v2/projects/").json()[0]["id"]
        assert_error(bound.get(job_events_path(mine["id"])), 404)
        assert_error(bound.get("/api/v2/events/", params={"project": mine["project"]["id"]}), 404)
        in_bound = submit(bound, name=unique("sse-bound"), n=2, start_now=False)

    streams = {
        "other-account": SseReader(shared_server.url, "/api/v2/events/", key=other),
        "bound-key": SseReader(shared_server.url, "/api/v2/events/", key=project_key),
        "owner-project": SseReader(
            shared_server.url,
            "/api/v2/events/",
            key=shared_server.key,
            params={"project": str(bound_project)},
        ),
        "owner-all": SseReader(shared_server.url, "/api/v2/events/", key=shared_server.key),
    }
    for reader in streams.values():
        reader.__enter__()
    try:
        for job, key in ((mine, shared_server.key), (theirs, other), (in_bound, project_key)):
            with shared_server.client(key) as c:
                assert c.post(f"{JOBS}{job['id']}/run/").status_code == 200
                assert finished(c, job["id"])["status"] == "SUCCESS"

        def done(job_id: int) -> Callable[[SseEvent], bool]:
            return lambda e: (
                e.event == "status" and e.data["job_id"] == job_id and e.data["to_status"] == "SUCCESS"
            )

        streams["other-account"].wait(done(theirs["id"]))
        streams["bound-key"].wait(done(in_bound["id"]))
        streams["owner-project"].wait(done(in_bound["id"]))
        streams["owner-all"].wait(done(mine["id"]))
        streams["owner-all"].wait(done(in_bound["id"]))
        seen = {
            name: {e.data["id"] if e.event == "job" else e.data["job_id"] for e in r.snapshot()}
            for name, r in streams.items()
        }
    finally:
        for reader in streams.values():
            reader.close()
    ours = {mine["id"], theirs["id"], in_bound["id"]}
    assert seen["other-account"] & ours == {theirs["id"]}
    assert seen["bound-key"] & ours == {in_bound["id"]}
    assert seen["owner-project"] & ours == {in_bound["id"]}
    assert seen["owner-all"] & ours == {mine["id"], in_bound["id"]}


def test_sigterm_ends_open_streams_and_exits_cleanly(server_factory: Callable[..., Server]) -> None:
    server = server_factory(workers=1)
    with server.client() as client:
        job = submit(client, name=unique("sse-stop"), n=1, start_now=False)
    with (
        SseReader(server.url, job_events_path(job["id"]), key=server.key) as job_stream,
        SseReader(server.url, "/api/v2/events/", key=server.key) as all_stream,
    ):
        job_stream.wait(lambda e: e.event == "job")
        assert server.stop(signal.SIGTERM, timeout=30) == 0
        for reader in (job_stream, all_stream):
            notice = reader.wait(lambda e: e.event == "shutdown", what="the shutdown event")
            assert "reconnect" in notice.data["reason"]
            assert reader.ended.wait(5), "the stream did not end"
    log = server.log()
    assert "stopped cleanly (SIGTERM)" in log
    assert "timeout graceful shutdown exceeded" not in log.lower(), log[-2000:]


def test_event_stream_endpoints_are_documented(shared_server: Server) -> None:
    spec = httpx.get(f"{shared_server.url}/openapi.json", timeout=10).json()
    for path in ("/api/v2/jobs/{job_id}/events/", "/api/v2/events/"):
        operation = spec["paths"][path]["get"]
        assert "Last-Event-ID" in operation["description"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_a_cursor_from_elsewhere_does_not_mute_the_stream(
    shared_server: Server, client: httpx.Client
) -> None:
    """A Last-Event-ID past the newest ids (another database) or not a cursor at all: start from now."""
    for given in ("999999999.999999999", "not-a-cursor"):
        job = submit(client, name=unique("sse-future"), n=1, start_now=False)
        headers = {"Last-Event-ID": given}
        with SseReader(
            shared_server.url, job_events_path(job["id"]), key=shared_server.key, headers=headers
        ) as r:
            r.wait(lambda e: e.event == "job" and e.data["status"] == "CREATED")
            assert client.post(f"{JOBS}{job['id']}/cancel/").status_code == 200
            r.wait(lambda e: e.event == "status" and e.data["to_status"] == "REVOKED")
