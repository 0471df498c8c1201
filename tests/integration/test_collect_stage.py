"""The collect stage: S3 prefixes and manifests at an address are listed into items while the
job runs, in pages, resumable; counters stay exact; bad lines fail single items."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from tests.helpers import Server, start_server, wait_status
from tests.helpers.inputs import FileServer, serve_files
from tests.moto_s3 import CREDENTIALS, moto_s3_server

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"}


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    yield from serve_files()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    env = {
        "CONVEYOR_ALLOW_PRIVATE_URLS": "true",
        "CONVEYOR_CHUNK_SIZE": "100",
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
    }
    server = start_server(tmp_path_factory.mktemp("collect"), workers=2, extra_env=env)
    yield server
    server.stop()


def test_manifest_at_a_url_is_listed_by_the_collect_stage(server: Server, files: FileServer) -> None:
    lines = [json.dumps({"uri": f"{files.base}/photo-{i}.jpg", "name": f"photo-{i}"}) for i in range(450)]
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
        params = {p["name"]: p["value"] for p in stages["collect"]["params"]}
        assert params["entries_listed"] == 451
        assert job["failed"] >= 1


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
