"""Jobs whose items are references, fetched by a real server's local workers (SQLite).

The test writes the job straight into the server's store (items with ``data`` NULL and ``ref``
set, as the submission of inputs by reference does), then the workers, which poll the queue,
fetch each item from the test's file server or moto's S3 just before the model runs it. The
server allows private URLs (CONVEYOR_ALLOW_PRIVATE_URLS=true), so it can reach 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from conveyor import sealing
from conveyor.inputs.s3 import S3Credentials
from conveyor.sealing import CREDENTIALS_SECRET
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.jobs import NewJob
from conveyor.testing import TERMINAL_STATUSES
from tests.helpers import Server, start_server, wait_for, wait_status
from tests.helpers.api import JOBS, all_items, all_logs
from tests.helpers.inputs import FileServer
from tests.helpers.reliability import assert_exactly_once, kill_9, local_worker_pids, sqlite_items
from tests.moto_s3 import CREDENTIALS, moto_s3_server

CHUNK_SIZE = 10


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
        client.create_bucket(Bucket="traps")
        for i in range(3):
            client.put_object(Bucket="traps", Key=f"cam/{i}.txt", Body=f"item {i}".encode())
        yield endpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("by-ref"),
        workers=2,
        extra_env={
            "CONVEYOR_ALLOW_PRIVATE_URLS": "true",
            "CONVEYOR_URL_TIMEOUT_SECONDS": "30",
            "CONVEYOR_FETCH_RETRIES": "1",
            "CONVEYOR_FETCH_BACKOFF_SECONDS": "0.01",
            "CONVEYOR_CHUNK_SIZE": str(CHUNK_SIZE),
            "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
            "CONVEYOR_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    yield started
    started.stop()
    started.kill()


@pytest.fixture
def files() -> Iterator[FileServer]:
    served = FileServer()
    yield served
    served.close()


@pytest.fixture
def store(server: Server) -> Iterator[Store]:
    # The store that creates a job also cuts it into chunks: the same chunk size as the server's.
    opened = Store(Settings(data_dir=server.data_dir, chunk_size=CHUNK_SIZE), pool_size=1)
    yield opened
    opened.close()


def create_job(
    store: Store, name: str, refs: list[str | None], *, config: dict[str, Any] | None = None, **job: Any
) -> int:
    """A started ``test-delay`` job whose item ``seq`` is read from ``refs[seq]`` (inline
    ``item <seq>`` when None)."""
    account_id, project_id = store.auth.ensure_defaults()
    rows = [
        {
            "seq": seq,
            "name": f"item-{seq}",
            "kind": "text",
            "byte_size": 0 if ref else len(f"item {seq}"),
            "data": None if ref else f"item {seq}".encode(),
            "ref": ref,
            "status": "PENDING",
        }
        for seq, ref in enumerate(refs)
    ]
    new = NewJob(
        name=name,
        account_id=account_id,
        project_id=project_id,
        pipeline_id=store.pipelines.latest("test-delay")["id"],
        job_type="ml",
        dispatch_mode="internal",
        max_failed_ratio=job.pop("max_failed_ratio", 1.0),
        config=config or {},
        input_summary={"kinds": {"text": len(refs)}, "count": len(refs)},
        **job,
    )
    job_id, _ = store.jobs.create(new, rows, start=True)  # the workers find it on their next poll
    return job_id


def finished(client: httpx.Client, job_id: int, timeout: float = 60) -> dict[str, Any]:
    return wait_status(client, job_id, TERMINAL_STATUSES, timeout)


def by_seq(client: httpx.Client, job_id: int) -> dict[int, dict[str, Any]]:
    return {item["seq"]: item for item in all_items(client, job_id)}


def test_missing_objects_fail_single_items(server: Server, store: Store, files: FileServer) -> None:
    urls = [files.add(f"/m{i}.txt", f"item {i}".encode()) for i in range(4)]
    refs: list[str | None] = [
        urls[0],
        files.base + "/gone.txt",  # 404
        urls[2],
        "s3://traps/cam/1.txt",
        "s3://traps/cam/missing.txt",
        None,  # bytes in the row
        urls[3],
    ]
    sealed = sealing.seal(
        store.processing_services.secret(CREDENTIALS_SECRET), S3Credentials("job-key", "job-secret").as_dict()
    )
    job_id = create_job(store, "missing-objects", refs, secret=sealed)
    with server.client() as client:
        job = finished(client, job_id)
        items = by_seq(client, job_id)
        logs = all_logs(client, job_id)
    assert job["status"] == "SUCCESS" and (job["completed"], job["failed"]) == (5, 2), job
    failed = {seq: item["error"] for seq, item in items.items() if item["status"] == "FAILURE"}
    assert set(failed) == {1, 4}
    assert failed[1].startswith("input_unavailable: Input 'item-1': ") and "HTTP 404" in failed[1]
    assert failed[4].startswith("input_unavailable: Input 'item-4': ") and "no such object" in failed[4]
    for seq in (0, 2, 5, 6):
        assert items[seq]["status"] == "SUCCESS" and items[seq]["result"] == {"bytes": len(f"item {seq}")}
    assert items[3]["result"] == {"bytes": len("item 1")}  # s3://traps/cam/1.txt
    assert [items[seq]["byte_size"] for seq in (0, 3, 6)] == [6, 6, 6]  # the bytes the worker read
    warnings = [line["message"] for line in logs if line["level"] == "WARNING"]
    assert any("2 item(s) failed" in w and "item-1" in w and "item-4" in w for w in warnings), warnings
    assert files.hits.count("/gone.txt") == 1  # a 404 is not retried


def test_too_many_unavailable_inputs_fail_the_job(server: Server, store: Store, files: FileServer) -> None:
    refs: list[str | None] = [files.base + f"/none{i}" for i in range(4)] + [None]
    job_id = create_job(store, "budget", refs, max_failed_ratio=0.5)
    with server.client() as client:
        job = finished(client, job_id)
    assert job["status"] == "FAILURE" and job["failed"] >= 3, job


def test_credentials_sealed_under_another_secret_fail_the_s3_items(server: Server, store: Store) -> None:
    sealed = sealing.seal("not the server's secret", S3Credentials("k", "the-job-secret").as_dict())
    job_id = create_job(store, "bad-seal", ["s3://traps/cam/0.txt", None], secret=sealed)
    with server.client() as client:
        finished(client, job_id)
        items = by_seq(client, job_id)
    assert items[0]["status"] == "FAILURE" and "credentials cannot be read" in items[0]["error"]
    assert "the-job-secret" not in items[0]["error"]
    assert items[1]["status"] == "SUCCESS"


def test_a_url_that_starts_refusing_fails_only_the_later_items(
    server: Server, store: Store, files: FileServer
) -> None:
    paths = [f"/r{i}.txt" for i in range(40)]
    refs: list[str | None] = [files.add(p, f"item {i}".encode()) for i, p in enumerate(paths)]
    # One item at a time, a tenth of a second each: the refusal comes while the job runs.
    job_id = create_job(store, "starts-refusing", refs, config={"item_seconds": 0.1})
    with server.client() as client:
        wait_for(lambda: client.get(f"{JOBS}{job_id}/").json()["completed"] >= 5, 60, what="5 items done")
        for path in paths:
            files.routes[path] = (403, {}, b"forbidden", 0.0)
        done_before = {s for s, item in by_seq(client, job_id).items() if item["status"] == "SUCCESS"}
        job = finished(client, job_id)
        items = by_seq(client, job_id)
    failed = {seq for seq, item in items.items() if item["status"] == "FAILURE"}
    assert len(done_before) >= 5 and failed, job
    assert not failed & done_before  # what had finished stays finished
    assert job["completed"] + job["failed"] == 40 and job["status"] == "SUCCESS"
    assert all("HTTP 403" in items[seq]["error"] for seq in failed)
    for seq in set(items) - failed:
        assert items[seq]["result"] == {"bytes": len(f"item {seq}")}


def test_kill_9_of_a_worker_mid_fetch_loses_and_double_counts_nothing(
    server: Server, store: Store, files: FileServer
) -> None:
    # Slow bodies (~0.35 s each, 8 at a time per worker): the kill lands while fetches run.
    refs: list[str | None] = [files.add(f"/k{i}.txt", f"item {i}".encode(), drip=0.05) for i in range(30)]
    job_id = create_job(store, "kill-mid-fetch", refs)
    wait_for(lambda: len(files.hits) >= 3, 30, what="fetches in flight")
    workers = local_worker_pids(server)
    assert workers and kill_9(workers[0])
    with server.client() as client:
        job = finished(client, job_id, timeout=90)
    assert job["status"] == "SUCCESS" and job["completed"] == 30, job
    assert_exactly_once(job, sqlite_items(server.data_dir, job_id))


def test_cancel_stops_a_worker_whose_url_hangs(server: Server, store: Store, files: FileServer) -> None:
    """Both workers wait on bodies that take 100 s; after the cancel they are free for the next
    job at once (neither waits for its hanging fetches)."""
    hanging: list[str | None] = [files.add(f"/h{i}", b"x" * 100, drip=1.0) for i in range(20)]
    job_id = create_job(store, "hangs", hanging)
    wait_for(lambda: len(files.hits) >= 12, 30, what="both workers fetching")  # > 8, one worker's share
    with server.client() as client:
        assert client.post(f"{JOBS}{job_id}/cancel/").status_code in (200, 202)
        assert finished(client, job_id, timeout=20)["status"] == "REVOKED"
        after = create_job(store, "after-hang", [None] * 12)  # two chunks: needs both workers free
        job = finished(client, after, timeout=20)
    assert job["status"] == "SUCCESS" and job["completed"] == 12
