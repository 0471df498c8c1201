"""The Python client's jobs by reference against a real server: an S3 prefix listed by the
collect stage, a local manifest sent inline, and ``fetch="at_submit"`` refusing up front. (The
workers of this branch do not read references yet: ``test-delay`` takes the empty bytes.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import ConveyorAPIError, ConveyorClient, manifest_input, url_input
from tests.helpers import Server
from tests.helpers.inputs import FileServer, serve_files, serve_references
from tests.moto_s3 import CREDENTIALS, moto_s3_server

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    yield from serve_references(tmp_path_factory, s3_endpoint)


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    yield from serve_files()


@pytest.fixture
def conveyor(server: Server) -> Iterator[ConveyorClient]:
    with ConveyorClient(server.url, server.key) as client:
        yield client


def test_submit_references_over_an_s3_prefix(conveyor: ConveyorClient, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket="client-bucket")
    for i in range(120):
        s3.put_object(Bucket="client-bucket", Key=f"in/{i:03d}.bin", Body=b"12345")
    seen: list[tuple[int, int]] = []

    def watch(job: dict[str, object]) -> None:
        stage = next(s for s in job["progress"]["stages"] if s["key"] == "collect")  # type: ignore[index,attr-defined]
        listed = next(p["value"] for p in stage["params"] if p["name"] == "entries_listed")
        seen.append((int(job["total"]), int(listed)))  # type: ignore[call-overload]

    job = conveyor.submit_references("test-delay", ["s3://client-bucket/in/"])
    assert job["name"] == "test-delay: s3://client-bucket/in/"
    final = conveyor.wait(job["id"], on_update=watch, poll=0.05, timeout=60)
    assert (final["status"], final["total"], final["completed"]) == ("SUCCESS", 120, 120)
    # `total` is the entries listed so far at every poll: it never runs ahead of the listing.
    assert all(total == listed for total, listed in seen), seen
    assert seen[-1] == (120, 120)
    sources = [item["source"] for item in conveyor.iter_items(job["id"], page_size=50)]
    assert sources == [f"s3://client-bucket/in/{i:03d}.bin" for i in range(120)]


def test_submit_manifest_from_a_local_file(
    conveyor: ConveyorClient, files: FileServer, tmp_path: Path
) -> None:
    urls = [files.add(f"/client/{i}.jpg", b"jpg") for i in range(4)]
    local = tmp_path / "batch.ndjson"
    local.write_text("\n".join(json.dumps({"uri": u, "name": f"n{i}"}) for i, u in enumerate(urls)))
    job = conveyor.submit_manifest("test-delay", local)
    assert job["total"] == 4
    final = conveyor.wait(job["id"], timeout=60)
    assert final["status"] == "SUCCESS"
    assert [(i["name"], i["source"]) for i in conveyor.iter_items(job["id"])] == [
        (f"n{i}", u) for i, u in enumerate(urls)
    ]


def test_fetch_at_submit_refuses_an_unreadable_input(conveyor: ConveyorClient, files: FileServer) -> None:
    gone = f"{files.base}/client/gone.jpg"
    with pytest.raises(ConveyorAPIError) as refused:
        conveyor.submit("test-delay", [url_input(gone)], fetch="at_submit")
    assert (refused.value.status, refused.value.code) == (400, "input_unavailable")
    accepted = conveyor.submit("test-delay", [url_input(gone)])  # by reference: the item holds it
    assert accepted["total"] == 1
    with pytest.raises(ConveyorAPIError) as no_manifests:  # manifests are only read by reference
        conveyor.submit("test-delay", [manifest_input(f"{files.base}/client/list.txt")], fetch="at_submit")
    assert (no_manifests.value.status, no_manifests.value.code) == (400, "invalid_input")
