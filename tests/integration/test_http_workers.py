"""HTTP workers (``conveyor worker --server URL``) against real servers started with ``--workers 0``.

Each worker runs from a data directory of its own with nothing but the URL and a worker key. The
kill -9 / SIGTERM test runs on SQLite and PostgreSQL and reads the item rows straight from the
database: every item written once (attempts == 1), counters equal to the rows.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conveyor.testing import http_worker
from tests.helpers import Server, assert_counters_match_rows, kill_process_group, start_server, wait_for
from tests.helpers.api import all_items, finished, get_job, submit
from tests.helpers.backends import chunk_rows, item_rows, postgres_database
from tests.helpers.inputs import FileServer

LEASES = "/api/v2/workers/leases/"


@contextlib.contextmanager
def serve(tmp_path: Path, backend: str = "sqlite", **env: str) -> Iterator[tuple[Server, sa.Engine]]:
    with contextlib.ExitStack() as stack:
        extra = {"CONVEYOR_CHUNK_SIZE": "10", "CONVEYOR_ALLOW_PRIVATE_URLS": "true", **env}
        if backend == "postgresql":
            extra["CONVEYOR_DATABASE_URL"] = stack.enter_context(postgres_database())
        server = start_server(tmp_path / "server", workers=0, extra_env=extra)
        stack.callback(server.stop)
        url = server.env.get("CONVEYOR_DATABASE_URL") or f"sqlite:///{server.data_dir / 'conveyor.db'}"
        engine = sa.create_engine(url)
        stack.callback(engine.dispose)
        yield server, engine


@contextlib.contextmanager
def worker(server: Server, key: str, data_dir: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    process = http_worker(server.url, key, data_dir, **kw)
    try:
        yield process
    finally:
        if process.poll() is None:
            kill_process_group(process.pid)
        process.wait(timeout=30)


def log_of(data_dir: Path) -> str:
    return (data_dir / "worker.log").read_text(errors="replace")


def lease(client: httpx.Client, pipelines: list[str] | None = None) -> dict[str, Any] | None:
    response = client.post(LEASES, json={"pipelines": pipelines or ["test-delay"], "name": "manual"})
    assert response.status_code == 200, response.text
    got: dict[str, Any] | None = response.json()["lease"]
    return got


# ----------------------------------------------------------------------------- the wire by hand
def test_worker_keys_lease_only_their_accounts_work_and_replays_change_nothing(tmp_path: Path) -> None:
    with serve(tmp_path) as (server, engine):
        key = server.create_key(role="worker", name="w")
        other = server.create_key(role="worker", name="other-w", account="other")
        viewer = server.create_key(role="viewer", name="v")
        elsewhere = server.create_key(role="worker", name="vision-w", project="vision")
        with server.client() as owner, server.client(key) as w, server.client(other) as o:
            # A worker key does nothing but lease: 403 everywhere else, with the reason.
            for response in (w.get("/api/v2/jobs/"), w.post("/api/v2/jobs/", json={})):
                assert response.status_code == 403
                assert "worker key" in response.json()["message"]
            with server.client(viewer) as v:
                refused = v.post(LEASES, json={"pipelines": ["test-delay"], "name": "v"})
                assert refused.status_code == 403 and "viewer" in refused.json()["message"]
            # Remote pipelines are never leased over HTTP.
            assert w.post(LEASES, json={"pipelines": ["remote:x/y"], "name": "w"}).status_code == 400
            assert w.post(LEASES, json={"pipelines": [], "name": "w"}).status_code == 422
            job = submit(owner, name="manual", n=4)
            assert lease(o) is None  # another account's job is not offered to its workers
            with server.client(elsewhere) as bound:
                assert lease(bound) is None  # nor another project's to a project-bound worker key
            got = lease(w)
            assert got is not None and got["job"]["id"] == job["id"] and got["attempt"] == 1
            assert all(i["data_b64"] and i["media_path"] is None for i in got["items"])
            chunk, token = got["chunk_id"], got["token"]
            # Another account: 404 on every verb of this chunk.
            for verb, body in (
                ("heartbeat", {"token": token}),
                ("results", {"token": token}),
                ("release", {"token": token}),
            ):
                assert o.post(f"{LEASES}{chunk}/{verb}/", json=body).status_code == 404
            assert w.post(f"{LEASES}{chunk}/heartbeat/", json={"token": "wrong"}).json()["held"] is False
            beat = w.post(f"{LEASES}{chunk}/heartbeat/", json={"token": token}).json()
            assert beat["held"] is True and beat["job"]["status"] == "STARTED"
            ids = [i["id"] for i in got["items"]]
            # Bad input writes nothing: a broken artifact fails the whole post.
            bad = {
                "token": token,
                "outcomes": [
                    {
                        "id": ids[0],
                        "ok": True,
                        "artifacts": [{"kind": "sample", "media_type": "image/jpeg", "data_b64": "@@@"}],
                    }
                ],
            }
            assert w.post(f"{LEASES}{chunk}/results/", json=bad).status_code == 400
            assert get_job(owner, job["id"])["completed"] == 0
            first = {
                "token": token,
                "outcomes": [
                    {"id": ids[0], "ok": True, "result": {"n": 0}},
                    {"id": ids[1], "ok": False, "error": "no"},
                ],
                "logs": [{"level": "INFO", "message": "half way"}],
            }
            for _ in range(3):  # the same post replayed (a lost answer): counted once
                answer = w.post(f"{LEASES}{chunk}/results/", json=first).json()
                assert answer == {"held": True, "job_status": "STARTED"}
            state = get_job(owner, job["id"])
            assert (state["completed"], state["failed"], state["pending"]) == (1, 1, 2)
            # An id of another job is ignored, not written.
            second = submit(owner, name="other job", n=1)
            foreign = [r for r in item_rows(engine, second["id"])]
            rest = {
                "token": token,
                "complete": True,
                "outcomes": [
                    {"id": ids[2], "ok": True, "result": {"n": 2}},
                    {"id": ids[3], "ok": True, "result": {"n": 3}},
                    {"id": ids[0], "ok": False, "error": "late rewrite"},
                ],
            }
            assert w.post(f"{LEASES}{chunk}/results/", json=rest).json() == {
                "held": True,
                "job_status": "SUCCESS",
            }
            # Replayed after the chunk was completed: the lease is over, nothing changes.
            assert w.post(f"{LEASES}{chunk}/results/", json=rest).json()["held"] is False
            done = get_job(owner, job["id"])
            assert (done["status"], done["completed"], done["failed"]) == ("SUCCESS", 3, 1)
            assert_counters_match_rows(done, item_rows(engine, job["id"]))
            assert [r[2] for r in item_rows(engine, job["id"])] == [1, 1, 1, 1]
            items = {i["id"]: i for i in all_items(owner, job["id"])}
            assert items[ids[0]]["status"] == "SUCCESS" and items[ids[1]]["error"] == "no"
            assert item_rows(engine, second["id"]) == foreign
            # The second job's chunk: released with requeue false while running -> queued again.
            got2 = lease(w)
            assert got2 is not None and got2["job"]["id"] == second["id"]
            release = w.post(
                f"{LEASES}{got2['chunk_id']}/release/", json={"token": got2["token"], "requeue": False}
            )
            assert release.status_code == 204
            assert [c[2] for c in chunk_rows(engine, second["id"])] == ["QUEUED"]


# ----------------------------------------------------------------------------- every pipeline
def test_an_http_worker_runs_every_shipped_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
    from conveyor import photos
    from conveyor.pipelines.digits import holdout_pngs

    files = FileServer()
    try:
        with serve(tmp_path) as (server, engine):
            key = server.create_key(role="worker", name="w")
            env = {"CONVEYOR_ALLOW_PRIVATE_URLS": "true"}
            with (
                server.client() as owner,
                worker(server, key, tmp_path / "w", concurrency=2, extra_env=env) as proc,
            ):
                text_url = files.add("/hello.txt", b"hello from a url")
                delay = submit(
                    owner,
                    name="delay",
                    inputs=[
                        {"name": "a", "kind": "text", "data": "a"},
                        {"name": "u", "kind": "url", "data": text_url},
                        {"name": "big", "kind": "text", "data": "x" * 5000},  # the blob store: a media path
                    ],
                    config={"fail_names": ["a"]},
                )
                pngs = holdout_pngs(limit=6)
                digits = submit(
                    owner,
                    name="digits",
                    pipeline="digits",
                    inputs=[
                        {"name": n, "kind": "base64", "data": base64.b64encode(d).decode()}
                        for n, d, _ in pngs
                    ],
                )
                embed = submit(owner, name="embed", pipeline="text-embedding", n=3)
                # Two real photos (bigger than CONVEYOR_BLOB_INLINE_BYTES: sent as media paths).
                pictures = [photos.as_jpeg(p) for p in photos.bundled(limit=2)]
                image_job = submit(
                    owner,
                    name="imagenet",
                    pipeline="imagenet-classifier",
                    explain=True,
                    inputs=[
                        {"name": p.name, "kind": "base64", "data": base64.b64encode(p.data).decode()}
                        for p in pictures
                    ],
                )
                jobs = [delay, digits, embed, image_job]
                done = {j["id"]: finished(owner, j["id"], timeout=240) for j in jobs}
                assert proc.poll() is None, log_of(tmp_path / "w")
            for job_id, state in done.items():
                assert state["status"] == "SUCCESS", (state, log_of(tmp_path / "w"))
                assert_counters_match_rows(state, item_rows(engine, job_id))
            d = done[delay["id"]]
            assert (d["completed"], d["failed"]) == (2, 1)
            # The URL's bytes were read by the worker and count once; the blob's were counted at submit.
            assert d["input_byte_amount"] == len(b"a") + 5000 + len(b"hello from a url")
            assert files.hits.count("/hello.txt") == 1
            labels = [i["result"] for i in all_items(server.client(), digits["id"])]
            assert all(r is not None for r in labels)
            vectors = [i["result"] for i in all_items(server.client(), embed["id"])]
            assert all(r for r in vectors)
            with server.client() as owner:
                # The worker's two threads are in the registry, with the items they wrote back (the
                # registry's throttle holds a count back for up to a second; the sweeper writes it).
                def listed() -> list[dict[str, Any]]:
                    answer = owner.get("/api/v2/workers/", params={"kind": "http"})
                    assert answer.status_code == 200, answer.text
                    rows: list[dict[str, Any]] = answer.json()
                    return rows

                total = sum(done[j]["completed"] + done[j]["failed"] for j in done)
                wait_for(lambda: sum(r["items_done"] for r in listed()) == total, timeout=10)
                rows = listed()
                assert len(rows) == 2 and all(r["name"].endswith(("/0", "/1")) for r in rows), rows
                assert {"digits", "imagenet-classifier"} <= set(rows[0]["pipelines"])
                first = all_items(owner, image_job["id"])[0]
                assert first["result"]
                for what in ("sample", "explanation"):
                    got = owner.get(f"/api/v2/jobs/{image_job['id']}/items/{first['id']}/{what}")
                    assert got.status_code == 200 and got.content, what
    finally:
        files.close()


# ----------------------------------------------------------------------------- kill -9, SIGTERM
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_and_sigterm_keep_every_item_counted_once(tmp_path: Path, backend: str) -> None:
    with serve(tmp_path, backend) as (server, engine):
        key = server.create_key(role="worker", name="w")
        with server.client() as owner:
            job = submit(
                owner, name="reliable", n=60, config={"item_seconds": 0.05, "fail_names": ["item-7"]}
            )
            job_id = job["id"]

            def progress() -> int:
                return int(get_job(owner, job_id)["completed"]) + int(get_job(owner, job_id)["failed"])

            with worker(server, key, tmp_path / "w1", pipelines=["test-delay"], name="first") as first:
                wait_for(lambda: progress() >= 5, 60, what="the first worker's progress")
                kill_process_group(first.pid)  # kill -9 mid-chunk: its lease runs out
                first.wait(10)
            assert first.returncode == -signal.SIGKILL
            with worker(server, key, tmp_path / "w2", pipelines=["test-delay"], name="second") as second:
                before = progress()
                wait_for(lambda: progress() >= before + 10, 60, what="the second worker's progress")
                second.send_signal(signal.SIGTERM)
                assert second.wait(30) == 0, log_of(tmp_path / "w2")
            # SIGTERM: what it finished is written, the rest went back to the queue at once.
            # (The killed worker's chunk may still be LEASED to it until its lease runs out.)
            chunks = chunk_rows(engine, job_id)
            assert not [c for c in chunks if c[2] == "LEASED" and (c[4] or "").startswith("second")], chunks
            assert "QUEUED" in [c[2] for c in chunks]
            stopped = get_job(owner, job_id)
            rows = item_rows(engine, job_id)
            assert stopped["pending"] == sum(1 for r in rows if r[1] == "PENDING") > 0
            assert stopped["completed"] == sum(1 for r in rows if r[1] == "SUCCESS")
            with worker(server, key, tmp_path / "w3", pipelines=["test-delay"], name="third"):
                done = finished(owner, job_id, timeout=120)
        rows = item_rows(engine, job_id)
        assert done["status"] == "SUCCESS"
        assert_counters_match_rows(done, rows)
        assert (done["completed"], done["failed"]) == (59, 1)
        assert all(attempts == 1 for _, _, attempts in rows), rows  # every item written exactly once
        # The killed worker's chunk was delivered again (after its lease ran out).
        assert any(attempts >= 2 for _, _, _, attempts, _ in chunk_rows(engine, job_id))


# ----------------------------------------------------------------------------- refused keys
def test_a_revoked_or_wrong_role_key_stops_the_worker_with_a_message(tmp_path: Path) -> None:
    with serve(tmp_path) as (server, _):
        viewer = server.create_key(role="viewer", name="v")
        with worker(server, viewer, tmp_path / "v") as refused:
            assert refused.wait(60) == 3
        assert "refused this worker's key" in log_of(tmp_path / "v") and "viewer" in log_of(tmp_path / "v")
        with worker(server, "cvy_nope.wrong", tmp_path / "bad") as unknown:
            assert unknown.wait(60) == 3
        assert "error: the server refused this worker's key" in log_of(tmp_path / "bad")
        with worker(server, viewer, tmp_path / "np", pipelines=["no-such-pipeline"]) as usage:
            assert usage.wait(60) == 2
        assert "not installed here: no-such-pipeline" in log_of(tmp_path / "np")
        key = server.create_key(role="worker", name="to-revoke")
        with server.client() as owner, worker(server, key, tmp_path / "w") as running:
            job = submit(owner, name="before", n=3)
            assert finished(owner, job["id"], timeout=60)["status"] == "SUCCESS"
            assert running.poll() is None
            assert owner.delete(f"/api/v2/keys/{key.split('.')[0]}/").status_code == 204
            assert running.wait(60) == 3
        message = log_of(tmp_path / "w")
        assert "error: the server refused this worker's key" in message
        assert "revoked" in message.lower() or "invalid" in message.lower() or "unknown" in message.lower()


# ----------------------------------------------------------------------------- cancel, timeout
def test_cancel_and_timeout_reach_the_http_worker_through_its_heartbeat(tmp_path: Path) -> None:
    with serve(tmp_path) as (server, engine):
        key = server.create_key(role="worker", name="w")
        with server.client() as owner, worker(server, key, tmp_path / "w", pipelines=["test-delay"]) as proc:
            slow = {"item_seconds": 0.3}
            canceled = submit(owner, name="to cancel", n=40, config=slow)
            wait_for(lambda: get_job(owner, canceled["id"])["completed"] >= 2, 60, what="progress")
            assert owner.post(f"/api/v2/jobs/{canceled['id']}/cancel/").status_code == 200
            revoked = finished(owner, canceled["id"], timeout=30)
            timed = submit(owner, name="to time out", n=40, config=slow, timeout=1500)
            timed_out = finished(owner, timed["id"], timeout=30)
            after = submit(owner, name="after", n=3)  # the worker goes on with the next job
            assert finished(owner, after["id"], timeout=30)["status"] == "SUCCESS"
            assert proc.poll() is None
        assert revoked["status"] == "REVOKED" and timed_out["status"] == "TIMEDOUT"
        for job in (revoked, timed_out):
            assert_counters_match_rows(job, item_rows(engine, job["id"]))
            assert 0 < job["completed"] < 40 and job["canceled"] > 0
            assert "LEASED" not in [c[2] for c in chunk_rows(engine, job["id"])]


# ----------------------------------------------------------------------------- S3 through the server
def test_s3_items_reach_an_http_worker_through_the_servers_media_route(tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    from tests.moto_s3 import CREDENTIALS, moto_s3_server

    with moto_s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
        s3.create_bucket(Bucket="inputs")
        s3.put_object(Bucket="inputs", Key="notes/hello.txt", Body=b"hello s3")
        env = {
            "CONVEYOR_S3_ENDPOINT_URL": endpoint,
            "CONVEYOR_S3_REGION": "us-east-1",
            "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
            "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
        }
        with serve(tmp_path, **env) as (server, engine):
            key = server.create_key(role="worker", name="w")
            with server.client() as owner, worker(server, key, tmp_path / "w", pipelines=["test-delay"]):
                job = submit(
                    owner,
                    name="s3",
                    inputs=[{"name": "hello", "kind": "s3", "data": "s3://inputs/notes/hello.txt"}],
                )
                done = finished(owner, job["id"], timeout=60)
                items = all_items(owner, job["id"])
    assert done["status"] == "SUCCESS", log_of(tmp_path / "w")
    assert items[0]["result"] == {"bytes": len(b"hello s3")}
    # Read from S3 (by the server, for the worker): counted once, as the worker reported it.
    assert done["input_byte_amount"] == len(b"hello s3")
    assert_counters_match_rows(done, item_rows(engine, job["id"]))
