"""The collect stage at scale (the million-entry runs are in bench/manifest_scale.py): a 100,000-line
manifest and an S3 prefix past the old 10,000-object cap are listed in pages into exactly their
entries, in order, while the server's memory stays flat."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import Server, children_of, start_server, wait_for, wait_status
from tests.helpers.inputs import FileServer, serve_files
from tests.moto_s3 import CREDENTIALS, moto_s3_server

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"}
MANIFEST_ENTRIES = 100_000
PREFIX_OBJECTS = 10_050


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
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
    }
    # One worker: it takes the collect chunk first (the oldest) and lists everything before it
    # could fetch an item; the test cancels the job once listing is over.
    server = start_server(tmp_path_factory.mktemp("collect-scale"), workers=1, extra_env=env)
    yield server
    server.stop()


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (KiB), from /proc."""
    total = 0
    for each in [pid, *children_of(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def item_names(data_dir: Path, job_id: int) -> list[str]:
    with sqlite3.connect(data_dir / "conveyor.db") as conn:
        return [r[0] for r in conn.execute("SELECT name FROM items WHERE job_id=? ORDER BY seq", (job_id,))]


def list_then_cancel(
    server: Server, inputs: list[dict[str, str]], expected: int
) -> tuple[dict[str, Any], set[int], int]:
    """Submit, watch listing to its end (the totals seen, the peak RSS growth), then cancel."""
    base_rss = rss_kib(server.pid)
    peak = base_rss
    totals: set[int] = set()
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true", json={"name": "scale", "pipeline": "test-delay", "inputs": inputs}
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        def listed() -> dict[str, Any] | None:
            nonlocal peak
            job = client.get(f"/api/v2/jobs/{job_id}/").json()
            totals.add(job["total"])
            peak = max(peak, rss_kib(server.pid))
            collect = {s["key"]: s for s in job["progress"]["stages"]}["collect"]
            return job if collect["status"] == "SUCCESS" else None

        job = wait_for(listed, timeout=240, interval=0.2, what="the collect stage to finish")
        assert client.post(f"/api/v2/jobs/{job_id}/cancel/").status_code == 200
        wait_status(client, job_id, TERMINAL, timeout=30)
    assert job["total"] == expected
    return job, totals, (peak - base_rss) // 1024


def test_a_100k_line_manifest_is_listed_in_pages(server: Server, files: FileServer) -> None:
    lines = (
        json.dumps({"uri": f"{files.base}/m/{i:06d}.jpg", "name": f"m-{i:06d}"})
        for i in range(MANIFEST_ENTRIES)
    )
    files.add("/big.jsonl", "\n".join(lines).encode())
    job, totals, growth_mib = list_then_cancel(
        server, [{"kind": "manifest", "data": f"{files.base}/big.jsonl"}], MANIFEST_ENTRIES
    )
    intermediate = {t for t in totals if 0 < t < MANIFEST_ENTRIES}
    assert len(intermediate) >= 3, f"listing was not seen in pages: {sorted(totals)}"
    assert growth_mib < 100, f"the server grew by {growth_mib} MiB while listing"
    names = item_names(server.data_dir, job["id"])
    assert names == [f"m-{i:06d}" for i in range(MANIFEST_ENTRIES)]


def test_an_s3_prefix_past_the_old_10k_cap(server: Server, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket="many")
    keys = [f"cam/{i:05d}.jpg" for i in range(PREFIX_OBJECTS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="many", Key=key, Body=b"x"), keys))
    job, _, _ = list_then_cancel(server, [{"kind": "s3", "data": "s3://many/cam/"}], PREFIX_OBJECTS)
    assert item_names(server.data_dir, job["id"]) == [key.rsplit("/", 1)[1] for key in keys]
