"""Modzy's ``aws-s3`` input type through the unmodified ``modzy-sdk`` (``client.jobs.submit_aws_s3``),
against objects in moto's standalone S3 server.

The Conveyor server is given the S3 endpoint but no S3 credentials of its own (and no AWS
credentials in its environment), so a job that runs has used the credentials sent with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from modzy.error import BadRequestError

from conveyor.pipelines.digits import holdout_pngs
from modzy import ApiClient
from tests.helpers import Server, start_server
from tests.moto_s3 import CREDENTIALS, moto_s3_server

boto3 = pytest.importorskip("boto3")

BUCKET = "modzy-inputs"
SECRET = "s3cr3t-for-modzy-test-0123456789"  # moto accepts any; this one must never be stored
POLL = 0.1


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def pngs(s3_endpoint: str) -> list[tuple[str, bytes, int]]:
    """Six digit images under `digits/` and a text object under `notes/`."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket=BUCKET)
    samples = holdout_pngs(limit=6)
    for name, data, _ in samples:
        s3.put_object(Bucket=BUCKET, Key=f"digits/{name}", Body=data)
    s3.put_object(Bucket=BUCKET, Key="notes/hello.txt", Body=b"hello from s3")
    return samples


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modzy-s3")


@pytest.fixture(scope="module")
def server(data_dir: Path, s3_endpoint: str) -> Iterator[Server]:
    env = {
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_URL_TIMEOUT_SECONDS": "5",
        # No credentials on the server side: boto3's own lookup finds none.
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    started = start_server(data_dir, workers=1, extra_env=env, extra_args=["--log-level", "info"])
    yield started
    started.stop()


def submit(client: ApiClient, model: str, sources: dict[str, Any]) -> Any:
    return client.jobs.submit_aws_s3(
        model, "1", sources, access_key_id="testing", secret_access_key=SECRET, region="us-east-1"
    )


def job_count(native: httpx.Client) -> int:
    count: int = native.get("/api/v2/jobs/").json()["count"]
    return count


def test_aws_s3_images_are_fetched_with_the_request_credentials_and_classified(
    client: ApiClient, native: httpx.Client, pngs: list[tuple[str, bytes, int]]
) -> None:
    # Keys as Modzy's examples write them (a leading slash), and without one.
    sources = {
        name: {"image": {"bucket": BUCKET, "key": f"/digits/{name}" if n % 2 else f"digits/{name}"}}
        for n, (name, _, _) in enumerate(pngs)
    }
    job = submit(client, "digits", sources)
    done = client.jobs.block_until_complete(job, timeout=60, poll_interval=POLL)
    assert done.status == "COMPLETED"
    assert (done.total, done.completed, done.failed) == (len(pngs), len(pngs), 0)
    assert [(i["identifier"], i["inputByteAmount"]) for i in done.jobInputs] == [
        (name, len(png)) for name, png, _ in pngs
    ]
    assert done.inputByteAmount == sum(len(png) for _, png, _ in pngs)
    assert done.imageClassificationModel is True

    result = client.results.block_until_complete(job, timeout=30, poll_interval=POLL)
    labels = {name: result.get_source_outputs(name)["results.json"]["label"] for name, _, _ in pngs}
    assert sum(labels[name] == truth for name, _, truth in pngs) >= len(pngs) - 1, labels

    # The stored items record where they came from, and nothing of the credentials.
    rows = native.get("/api/v2/jobs/", params={"search": "Modzy job: digits"}).json()["results"]
    (row,) = [r for r in rows if r["job_identifier"] == job.jobIdentifier]
    items = native.get(f"/api/v2/jobs/{row['id']}/items/").json()["results"]
    assert [i["source"] for i in items] == [f"s3://{BUCKET}/digits/{name}" for name, _, _ in pngs]
    assert SECRET not in str(native.get(f"/api/v2/jobs/{row['id']}/").json()) + str(items)


def test_aws_s3_text_object_reaches_a_text_pipeline(client: ApiClient, pngs: Any) -> None:
    job = submit(client, "test-delay", {"note": {"input.txt": {"bucket": BUCKET, "key": "notes/hello.txt"}}})
    assert client.jobs.block_until_complete(job, timeout=60, poll_interval=POLL).status == "COMPLETED"
    result = client.results.get(job)
    assert result.get_source_outputs("note")["results.json"] == {"bytes": len(b"hello from s3")}


def test_a_missing_object_fails_its_source_alone(
    client: ApiClient, native: httpx.Client, pngs: list[tuple[str, bytes, int]]
) -> None:
    """Objects are read by the workers (inputs by reference): a missing key fails that source
    with input_unavailable, the others are classified."""
    good = {"image": {"bucket": BUCKET, "key": f"digits/{pngs[0][0]}"}}
    missing = {"image": {"bucket": BUCKET, "key": "digits/no-such.png"}}
    job = submit(client, "digits", {"good": good, "gone": missing})
    done = client.jobs.block_until_complete(job, timeout=60, poll_interval=POLL)
    assert (done.total, done.completed, done.failed) == (2, 1, 1)
    result = client.results.get(job)
    assert "gone" in result.failures and "input_unavailable" in str(result.failures["gone"])
    assert "label" in result.get_source_outputs("good")["results.json"]


def test_bad_s3_sources_are_a_400_naming_the_source_and_no_job_is_created(
    client: ApiClient, native: httpx.Client, pngs: list[tuple[str, bytes, int]]
) -> None:
    before = job_count(native)
    good = {"image": {"bucket": BUCKET, "key": f"digits/{pngs[0][0]}"}}
    cases = [
        ({"bucket": "no-such-bucket", "key": "a.png"}, "no such bucket"),
        ({"bucket": BUCKET}, "needs `key`"),
        ({"bucket": BUCKET, "key": "digits/"}, "needs `key`"),
        ({"key": "digits/a.png"}, "needs `bucket`"),
        ("s3://bucket/key", "needs `bucket`"),
    ]
    for value, message in cases:
        with pytest.raises(BadRequestError, match=message) as raised:
            submit(client, "digits", {"good": good, "broken-source": {"image": value}})
        assert "broken-source" in str(raised.value)
    assert job_count(native) == before


def test_credentials_are_per_request_and_never_stored(
    server: Server,
    data_dir: Path,
    client: ApiClient,
    native: httpx.Client,
    pngs: list[tuple[str, bytes, int]],
) -> None:
    job = submit(client, "test-delay", {"note": {"input.txt": {"bucket": BUCKET, "key": "notes/hello.txt"}}})
    assert client.jobs.block_until_complete(job, timeout=60, poll_interval=POLL).status == "COMPLETED"
    # The worker read the object with the job's own credentials (the server has none), sealed in
    # the job while it ran and erased when it ended; no read shows them.
    engine = sa.create_engine(f"sqlite:///{data_dir / 'conveyor.db'}")
    try:
        with engine.connect() as conn:
            (job_id, sealed) = conn.execute(
                sa.text("SELECT id, secret FROM jobs WHERE uuid = :u"), {"u": job.jobIdentifier}
            ).one()
    finally:
        engine.dispose()
    assert sealed is None
    shown = [
        native.get(f"/api/v2/jobs/{job_id}/").text,
        native.get(f"/api/v2/jobs/{job_id}/logs/").text,
        native.get(f"/api/v2/jobs/{job_id}/transitions/").text,
        native.get(f"/api/v2/jobs/{job_id}/items/").text,
        native.get(f"/api/v2/jobs/{job_id}/results/").text,
        native.get(f"/api/jobs/{job.jobIdentifier}", headers={"Accept": "application/json"}).text,
    ]
    assert not any(SECRET in text for text in shown)
    # The next request brings no credentials and the server has none: the fetch fails, no job.
    before = job_count(native)
    body = {
        "model": {"identifier": "digits", "version": "1"},
        "input": {
            "type": "aws-s3",
            "sources": {"anonymous": {"image": {"bucket": BUCKET, "key": f"digits/{pngs[0][0]}"}}},
        },
    }
    response = httpx.post(
        f"{server.url}/api/jobs", json=body, headers={"Authorization": f"ApiKey {server.key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["statusCode"] == 400 and error["error"] == "input_unavailable"
    assert "anonymous" in error["message"]
    # Half the credentials is a clear 400 too.
    body["input"]["accessKeyID"] = "testing"  # type: ignore[index]
    response = httpx.post(
        f"{server.url}/api/jobs", json=body, headers={"Authorization": f"ApiKey {server.key}"}
    )
    assert response.status_code == 400 and "secretAccessKey" in response.json()["message"]
    # An invalid body is not echoed back with its secret.
    invalid = {
        "model": body["model"],
        "input": {"type": "aws-s3", "accessKeyID": "k", "secretAccessKey": SECRET},
    }
    response = httpx.post(
        f"{server.url}/api/jobs", json=invalid, headers={"Authorization": f"ApiKey {server.key}"}
    )
    assert response.status_code == 400 and "sources" in response.json()["message"]
    assert SECRET not in response.text
    assert job_count(native) == before
    # The secret that ran the first job is nowhere in the server's data directory (database, log).
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
