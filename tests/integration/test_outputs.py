"""Job outputs (sharded JSONL + manifest) to file:// and to S3 (moto's real server on loopback),
on a real server with local workers: shards complete and duplicate-free, also after kill -9 of
workers mid-job, after an early stop and after a retry; bad outputs refused before anything is
stored."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, start_server, text_inputs, wait_for, wait_status
from tests.helpers.api import JOBS, all_items, assert_error, count_named, unique
from tests.helpers.reliability import FINISHED, kill_9, local_worker_pids
from tests.moto_s3 import CREDENTIALS, moto_s3_server

boto3 = pytest.importorskip("boto3")

BUCKET = "results"
CHUNK = 25


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        boto3.client("s3", endpoint_url=url, **CREDENTIALS).create_bucket(Bucket=BUCKET)
        yield url


def _env(s3_endpoint: str, root: Path) -> dict[str, str]:
    return {
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
        "CONVEYOR_URL_TIMEOUT_SECONDS": "5",
        "CONVEYOR_OUTPUT_FILE_ROOT": str(root),
        "CONVEYOR_CHUNK_SIZE": str(CHUNK),
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, root: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("srv"), workers=2, extra_env=_env(s3_endpoint, root))
    yield server
    server.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def submit(client: httpx.Client, n: int, output: dict[str, Any], **body: Any) -> httpx.Response:
    name = body.pop("name", unique("out"))
    return client.post(
        JOBS + "?start_now=true",
        json={"name": name, "pipeline": "test-delay", "inputs": text_inputs(n), "output": output, **body},
    )


def with_manifest(client: httpx.Client, job_id: int) -> dict[str, Any]:
    """The job once it has ended and its output's manifest is recorded."""

    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"{JOBS}{job_id}/").json()
        manifest = (job.get("output") or {}).get("manifest")
        return job if job["status"] in FINISHED and manifest else None

    found: dict[str, Any] = wait_for(check, 60, what=f"the manifest of job {job_id}")
    return found


def read_file_output(directory: Path, *, final: bool = True) -> tuple[dict[str, bytes], dict[str, Any]]:
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name.startswith("predictions-")}
    if final:  # (while a worker writes, its temporary file is there)
        assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"
    return files, json.loads((directory / "manifest.json").read_bytes())


def read_s3_output(endpoint: str, prefix: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    files = {
        key[len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        for key in keys
        if key[len(prefix) :].startswith("predictions-")
    }
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.json")["Body"].read())
    return files, manifest


def check_output(
    client: httpx.Client, job: dict[str, Any], files: dict[str, bytes], manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every finished item is in exactly one shard line, with its stored result; the manifest and
    the job's `output` agree with the files. Returns the lines."""
    lines: list[dict[str, Any]] = []
    for name, data in files.items():
        assert data.endswith(b"\n"), f"{name} is torn"
        lines.extend(json.loads(line) for line in data.decode().splitlines())
    items = {i["seq"]: i for i in all_items(client, job["id"])}
    finished = {seq for seq, i in items.items() if i["status"] in ("SUCCESS", "FAILURE")}
    seqs = [line["seq"] for line in lines]
    assert len(seqs) == len(set(seqs)), "an item is in the output twice"
    assert set(seqs) == finished
    for line in lines:
        item = items[line["seq"]]
        assert line["name"] == item["name"] and line["item_id"] == item["id"]
        assert (line["status"], line["result"], line["error"]) == (
            item["status"],
            item["result"],
            item["error"],
        )
    assert manifest["job"]["id"] == job["id"] and manifest["job"]["status"] == job["status"]
    assert manifest["items"] == {k: job[k] for k in ("total", "completed", "failed", "canceled")}
    listed = {s["name"]: s for s in manifest["shards"]}
    assert set(listed) == set(files)
    for name, data in files.items():
        assert listed[name]["bytes"] == len(data)
        assert listed[name]["items"] == data.count(b"\n")
    output = job["output"]
    assert output["shards"] == len(files)
    assert output["items"] == len(lines)
    assert output["bytes"] == sum(len(d) for d in files.values())
    return lines


def test_file_output_gets_one_shard_per_chunk_and_a_manifest(client: httpx.Client, root: Path) -> None:
    directory = root / "job-file"
    response = submit(
        client,
        110,
        {"uri": directory.as_uri()},
        config={"fail_names": ["item-3", "item-77"], "batch_size": 10},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["output"]["uri"] == directory.as_uri() + "/"
    job = with_manifest(client, created["id"])
    assert job["status"] == "SUCCESS" and job["failed"] == 2
    assert job["output"]["manifest"] == directory.as_uri() + "/manifest.json"
    files, manifest = read_file_output(directory)
    # 110 items in chunks of 25: five shards, named by the chunk's ordinal.
    assert sorted(files) == [f"predictions-{n:05d}.jsonl" for n in range(1, 6)]
    lines = check_output(client, job, files, manifest)
    failed = sorted(line["name"] for line in lines if line["status"] == "FAILURE")
    assert failed == ["item-3", "item-77"]
    assert all(line["error"] for line in lines if line["status"] == "FAILURE")
    first = json.loads(files["predictions-00001.jsonl"].splitlines()[0])
    assert set(first) == {"name", "seq", "item_id", "source", "status", "result", "error"}
    assert first["seq"] == 0 and first["result"] == {"bytes": len("item 0")}


def test_s3_output(client: httpx.Client, s3_endpoint: str) -> None:
    prefix = f"{unique('s3')}/"
    response = submit(client, 60, {"uri": f"s3://{BUCKET}/{prefix}"})
    assert response.status_code == 201, response.text
    job = with_manifest(client, response.json()["id"])
    assert job["output"]["manifest"] == f"s3://{BUCKET}/{prefix}manifest.json"
    files, manifest = read_s3_output(s3_endpoint, prefix)
    assert len(files) == 3  # 60 items, chunks of 25
    assert len(check_output(client, job, files, manifest)) == 60


def test_an_early_stop_and_a_retry_keep_the_output_complete(client: httpx.Client, root: Path) -> None:
    """A job stopped by its failure budget drops its open chunks: the sweeper writes the shards
    of what finished. A retry rewrites the failed items' shards and the manifest: still once each."""
    directory = root / "job-stop"
    fail = [f"item-{i}" for i in range(0, 200, 7)]
    response = submit(
        client,
        200,
        {"uri": directory.as_uri() + "/"},
        config={"fail_names": fail, "item_seconds": 0.005},
        max_failed_ratio=0.05,
    )
    assert response.status_code == 201, response.text
    job = with_manifest(client, response.json()["id"])
    assert job["status"] == "FAILURE", job["status"]
    files, manifest = read_file_output(directory)
    check_output(client, job, files, manifest)

    assert client.post(f"{JOBS}{job['id']}/retry/").status_code == 200
    wait_for(
        lambda: read_file_output(directory, final=False)[1]["written_at"] != manifest["written_at"],
        30,
        what="the manifest to be rewritten",
    )
    again = with_manifest(client, job["id"])
    files, manifest = read_file_output(directory)
    check_output(client, again, files, manifest)


@pytest.mark.parametrize(
    ("output", "status", "code"),
    [
        ({"uri": "ftp://host/dir/"}, 400, "invalid_input"),
        ({"uri": "s3://no-such-bucket-here/out/"}, 400, "input_unavailable"),
        ({"uri": "file:///etc/conveyor-out/"}, 400, "invalid_input"),  # outside the output root
        ({"uri": "file://otherhost/tmp/x/"}, 400, "invalid_input"),
        ({"uri": "file:///x", "region": "eu"}, 422, "validation_error"),  # the schema's own check
    ],
)
def test_a_bad_output_is_refused_before_anything_is_stored(
    client: httpx.Client, output: dict[str, Any], status: int, code: str
) -> None:
    name = unique("bad-out")
    body = assert_error(submit(client, 2, output, name=name), status)
    assert body["error"] == code, body
    assert count_named(client, name) == 0


def test_a_file_output_escaping_the_root_is_refused(client: httpx.Client, root: Path, tmp_path: Path) -> None:
    name = unique("escape")
    dotdot = root.as_uri() + "/a/../../escaped/"
    body = assert_error(submit(client, 1, {"uri": dotdot}, name=name), 400)
    assert "outside" in body["message"]
    link = root / "link-out"
    link.symlink_to(tmp_path, target_is_directory=True)
    body = assert_error(submit(client, 1, {"uri": link.as_uri() + "/sub/"}, name=name), 400)
    assert "outside" in body["message"]
    assert not (tmp_path / "sub").exists()
    assert count_named(client, name) == 0


def test_kill_9_of_local_workers_mid_job_leaves_complete_duplicate_free_shards(
    server_factory: Callable[..., Server], s3_endpoint: str, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    env = {**_env(s3_endpoint, root), "CONVEYOR_CHUNK_SIZE": "40"}
    server = server_factory(workers=2, extra_env=env)
    killed: list[int] = []
    with server.client() as client:
        directory = root / "chaos"
        response = submit(
            client, 800, {"uri": directory.as_uri()}, config={"item_seconds": 0.004, "batch_size": 5}
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_for(lambda: client.get(f"{JOBS}{job_id}/").json()["completed"], 30, what="work to start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(killed) < 4:
            if client.get(f"{JOBS}{job_id}/").json()["status"] in FINISHED:
                break
            for pid in local_worker_pids(server):
                if pid not in killed and kill_9(pid):
                    killed.append(pid)
                    break
            time.sleep(0.8)
        assert killed, "the job ended before a worker could be killed"
        wait_status(client, job_id, FINISHED, timeout=120)
        job = with_manifest(client, job_id)
        assert job["status"] == "SUCCESS"
        files, manifest = read_file_output(directory)
        assert len(files) == 20
        assert len(check_output(client, job, files, manifest)) == 800
