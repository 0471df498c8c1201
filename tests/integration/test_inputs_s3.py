"""S3 inputs with `fetch: at_submit` (read during the request) against moto's standalone S3
server, started by the test on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server, start_server
from tests.helpers.api import JOBS, all_items, assert_error, count_named, finished, unique
from tests.moto_s3 import CREDENTIALS, moto_s3_server

boto3 = pytest.importorskip("boto3")

INPUT_CAP = 2000


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> dict[str, Any]:
    """A bucket with three digit images under `digits/`, a text and an oversized object."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket="inputs")
    pngs = holdout_pngs(limit=3)
    for name, data, _ in pngs:
        s3.put_object(Bucket="inputs", Key=f"digits/{name}", Body=data)
    s3.put_object(Bucket="inputs", Key="digits/", Body=b"")  # a "folder" marker, skipped
    s3.put_object(Bucket="inputs", Key="notes/hello.txt", Body=b"hello s3")
    s3.put_object(Bucket="inputs", Key="big/blob.bin", Body=b"x" * (INPUT_CAP + 1))
    for index in range(4):
        s3.put_object(Bucket="inputs", Key=f"many/{index}.txt", Body=b"m")
    return {"pngs": pngs}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    env = {
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
        "CONVEYOR_S3_MAX_OBJECTS_PER_PREFIX": "3",
        "CONVEYOR_MAX_INPUT_BYTES": str(INPUT_CAP),
        "CONVEYOR_URL_TIMEOUT_SECONDS": "5",
    }
    server = start_server(tmp_path_factory.mktemp("s3"), workers=1, extra_env=env)
    yield server
    server.stop()


@pytest.fixture
def client(s3_server: Server) -> Iterator[httpx.Client]:
    with s3_server.client() as c:
        yield c


def post(
    client: httpx.Client, name: str, inputs: list[dict[str, Any]], pipeline: str = "digits"
) -> httpx.Response:
    """Submit with ``fetch: at_submit``: this module tests the strict path, where every input is
    read during the request (inputs by reference: tests/integration/test_inputs_by_reference.py)."""
    body = {"name": name, "pipeline": pipeline, "inputs": inputs, "fetch": "at_submit"}
    return client.post(JOBS + "?start_now=true", json=body)


def test_s3_object_and_prefix_expansion(client: httpx.Client, bucket: dict[str, Any]) -> None:
    pngs = bucket["pngs"]
    name = unique("s3")
    inputs = [
        {"kind": "s3", "data": "s3://inputs/digits/"},  # expands to the three images, in key order
        {"kind": "s3", "data": f"s3://inputs/digits/{pngs[1][0]}", "name": "again"},
    ]
    response = post(client, name, inputs)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["total"] == 4
    assert job["input_byte_amount"] == sum(len(d) for _, d, _ in pngs) + len(pngs[1][1])
    assert finished(client, job["id"])["status"] == "SUCCESS"
    items = all_items(client, job["id"])
    assert [i["name"] for i in items] == [n for n, _, _ in pngs] + ["again"]
    assert items[0]["source"] == f"s3://inputs/digits/{pngs[0][0]}"
    labels = [label for _, _, label in pngs] + [pngs[1][2]]
    assert sum(i["result"]["label"] == want for i, want in zip(items, labels, strict=True)) >= 3


def test_s3_text_object_reaches_a_text_pipeline(client: httpx.Client, bucket: dict[str, Any]) -> None:
    response = post(
        client, unique("s3-text"), [{"kind": "s3", "data": "s3://inputs/notes/hello.txt"}], "test-delay"
    )
    assert response.status_code == 201, response.text
    assert finished(client, response.json()["id"])["status"] == "SUCCESS"
    [item] = all_items(client, response.json()["id"])
    assert (item["name"], item["byte_size"]) == ("hello.txt", len(b"hello s3"))


@pytest.mark.parametrize(
    ("address", "status", "code"),
    [
        ("s3://inputs/digits/missing.png", 400, "input_unavailable"),
        ("s3://no-such-bucket/a.png", 400, "input_unavailable"),
        ("s3://inputs/empty-prefix/", 400, "input_unavailable"),
        ("s3://inputs/big/blob.bin", 413, "too_large"),
        ("s3://inputs/many/", 413, "too_large"),  # 4 objects > CONVEYOR_S3_MAX_OBJECTS_PER_PREFIX=3
        ("s3:/inputs/x", 400, "invalid_input"),
        ("s3://", 400, "invalid_input"),
    ],
)
def test_bad_s3_inputs_are_clear_4xx_and_nothing_is_stored(
    client: httpx.Client, bucket: dict[str, Any], address: str, status: int, code: str
) -> None:
    name = unique("bad-s3")
    good = {"kind": "s3", "data": "s3://inputs/notes/hello.txt"}
    error = assert_error(
        post(client, name, [good, {"kind": "s3", "data": address, "name": "bad"}], "test-delay"), status
    )
    assert error["error"] == code, error
    assert "'bad'" in error["message"], error
    assert count_named(client, name) == 0


def test_s3_inputs_can_fill_a_collection(client: httpx.Client, bucket: dict[str, Any]) -> None:
    collection = client.post("/api/v2/collections/", json={"name": unique("s3-coll")}).json()
    added = client.post(
        f"/api/v2/collections/{collection['id']}/items/",
        json={"inputs": [{"kind": "s3", "data": "s3://inputs/digits/"}]},
    )
    assert added.status_code == 201, added.text
    assert added.json()["added"] == 3
