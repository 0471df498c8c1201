"""The collect stage: S3 prefixes and manifests at an address are listed into items while the
job runs, in pages, resumable; counters stay exact; bad lines fail single items."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.helpers import Server, wait_for, wait_status
from tests.helpers.api import all_items
from tests.helpers.inputs import FileServer, serve_files, serve_references
from tests.helpers.reliability import kill_9
from tests.moto_s3 import CREDENTIALS, moto_s3_server

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"}


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    yield from serve_files()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


server = pytest.fixture(scope="module")(serve_references)


def test_manifest_at_a_url_is_listed_by_the_collect_stage(server: Server, files: FileServer) -> None:
    lines = [
        json.dumps({"uri": files.add(f"/photo-{i}.jpg", b"p" * i), "name": f"photo-{i}"}) for i in range(450)
    ]
    lines.insert(200, "this is not json")
    files.add("/list.jsonl", "\n".join(lines).encode())
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "manifest",
                "pipeline": "test-delay",
                "inputs": [{"kind": "manifest", "data": f"{files.base}/list.jsonl"}],
            },
        )
        assert response.status_code == 201, response.text
        job = wait_status(client, response.json()["id"], TERMINAL, timeout=60)
        assert job["total"] == 451
        stages = {s["key"]: s for s in job["progress"]["stages"]}
        assert stages["collect"]["status"] == "SUCCESS"
        assert collect_params(job)["entries_listed"] == 451
        assert (job["status"], job["completed"], job["failed"]) == ("SUCCESS", 450, 1)


def test_s3_prefix_past_one_page(server: Server, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket="photos")
    for i in range(250):
        s3.put_object(Bucket="photos", Key=f"2026/p-{i:04d}.txt", Body=f"text {i}".encode())
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "prefix",
                "pipeline": "test-delay",
                "inputs": [{"kind": "s3", "data": "s3://photos/2026/"}],
            },
        )
        assert response.status_code == 201, response.text
        job = wait_status(client, response.json()["id"], TERMINAL, timeout=60)
        assert job["total"] == 250
        params = {
            p["name"]: p["value"]
            for p in {s["key"]: s for s in job["progress"]["stages"]}["collect"]["params"]
        }
        assert params["bytes_declared"] == sum(len(f"text {i}") for i in range(250))


def collect_params(job: dict[str, Any]) -> dict[str, Any]:
    stage = {s["key"]: s for s in job["progress"]["stages"]}["collect"]
    return {p["name"]: p["value"] for p in stage["params"]}


def test_formats_limit_and_direct_inputs_come_first(server: Server, files: FileServer) -> None:
    csv_body = "name,uri\n" + "".join(f"c{i},{files.base}/c/{i}.txt\n" for i in range(30))
    files.add("/list.csv", csv_body.encode())
    text_body = "# photos\n" + "".join(f"{files.base}/t/{i}.txt\n" for i in range(30))
    files.add("/list.txt", text_body.encode())
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "formats",
                "pipeline": "test-delay",
                "limit": 45,
                "inputs": [
                    {"kind": "manifest", "data": f"{files.base}/list.csv"},
                    {"kind": "url", "data": f"{files.base}/direct.txt", "name": "direct"},
                    {"kind": "manifest", "data": f"{files.base}/list.txt", "format": "text"},
                ],
            },
        )
        assert response.status_code == 201, response.text
        job = wait_status(client, response.json()["id"], TERMINAL, timeout=60)
        assert job["total"] == 45
        names = [i["name"] for i in all_items(client, job["id"])]
        assert names == ["direct"] + [f"c{i}" for i in range(30)] + [f"{i}.txt" for i in range(14)]


def test_inline_manifest_bad_line_fails_one_item(server: Server, files: FileServer) -> None:
    lines = [json.dumps({"uri": files.add(f"/i/{i}.txt", b"i")}) for i in range(5)] + [
        '{"uri": "ftp://nope/x"}'
    ]
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "inline-manifest",
                "pipeline": "test-delay",
                "inputs": [{"kind": "manifest", "data": "\n".join(lines)}],
            },
        )
        assert response.status_code == 201, response.text
        job = wait_status(client, response.json()["id"], TERMINAL, timeout=60)
        assert (job["total"], job["failed"]) == (6, 1)
        bad = [i for i in all_items(client, job["id"]) if i["status"] == "FAILURE"]
        assert len(bad) == 1 and "not an http(s):// URL" in bad[0]["error"], bad


def test_bad_manifests_are_clear_4xx_at_submit(server: Server, files: FileServer) -> None:
    files.add("/header-only.csv", b"name,path\nx,y\n")
    with server.client() as client:
        for inputs, needle in [
            ([{"kind": "manifest", "data": f"{files.base}/missing.jsonl"}], "HTTP 404"),
            ([{"kind": "manifest", "data": f"{files.base}/header-only.csv"}], "no `uri` column"),
            ([{"kind": "s3", "data": "s3://no-such-bucket/prefix/"}], "no-such-bucket"),
            ([{"kind": "manifest", "data": "{}", "format": "yaml"}], "format"),
        ]:
            response = client.post(
                "/api/v2/jobs/", json={"name": "bad", "pipeline": "test-delay", "inputs": inputs}
            )
            assert 400 <= response.status_code < 500, response.text
            assert needle in response.text, response.text


def test_a_manifest_gone_after_submit_fails_the_job_with_the_reason(
    server: Server, files: FileServer
) -> None:
    files.add("/vanishing.txt", f"{files.base}/v/1.txt\n".encode())
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/",  # created, not started: the manifest goes away before the collect stage
            json={
                "name": "vanish",
                "pipeline": "test-delay",
                "inputs": [{"kind": "manifest", "data": f"{files.base}/vanishing.txt"}],
            },
        )
        assert response.status_code == 201, response.text
        files.add("/vanishing.txt", b"gone", status=410)
        job_id = response.json()["id"]
        assert client.post(f"/api/v2/jobs/{job_id}/run/").status_code == 200
        job = wait_status(client, job_id, TERMINAL, timeout=60)
        assert job["status"] == "FAILURE"
        assert any("HTTP 410" in line for line in job["progress"]["errors"]), job["progress"]["errors"]


def test_kill_9_of_the_collecting_worker_lists_every_entry_once(server: Server, files: FileServer) -> None:
    urls = [files.add(f"/k/{i:03d}.txt", b"k") for i in range(150)]
    files.add("/slow-list.txt", "".join(u + "\n" for u in urls).encode(), drip=0.0004)
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "kill-collect",
                "pipeline": "test-delay",
                "inputs": [{"kind": "manifest", "data": f"{files.base}/slow-list.txt"}],
            },
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        def collecting_pid() -> int | None:
            with sqlite3.connect(server.data_dir / "conveyor.db") as conn:
                row = conn.execute(
                    "SELECT leased_by FROM chunks WHERE job_id=? AND kind='collect' AND status='LEASED'",
                    (job_id,),
                ).fetchone()
            total = client.get(f"/api/v2/jobs/{job_id}/").json()["total"]
            return int(row[0].split(":")[1]) if row and total >= 20 else None

        pid = wait_for(collecting_pid, timeout=30, what="the collect stage half-way")
        assert kill_9(pid)
        job = wait_status(client, job_id, TERMINAL, timeout=90)
        assert job["status"] == "SUCCESS", job["progress"]["logs"][-5:]
        items = all_items(client, job_id)
        assert [i["seq"] for i in items] == list(range(150))
        assert [i["name"] for i in items] == [f"{i:03d}.txt" for i in range(150)]
        assert collect_params(job)["entries_listed"] == 150


def test_cancel_during_collect_stops_listing(server: Server, files: FileServer) -> None:
    urls = [f"{files.base}/c2/{i}.txt" for i in range(300)]
    files.add("/slower-list.txt", "".join(u + "\n" for u in urls).encode(), drip=0.001)
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": "cancel-collect",
                "pipeline": "test-delay",
                "inputs": [{"kind": "manifest", "data": f"{files.base}/slower-list.txt"}],
            },
        )
        job_id = response.json()["id"]
        wait_for(
            lambda: client.get(f"/api/v2/jobs/{job_id}/").json()["total"] > 0, timeout=30, what="listing"
        )
        assert client.post(f"/api/v2/jobs/{job_id}/cancel/").status_code == 200
        job = wait_status(client, job_id, TERMINAL, timeout=10)
        assert job["status"] == "REVOKED"
        time.sleep(1.0)
        after = client.get(f"/api/v2/jobs/{job_id}/").json()
        assert after["total"] == job["total"] < 300
        assert after["completed"] + after["failed"] + after["canceled"] == after["total"]
