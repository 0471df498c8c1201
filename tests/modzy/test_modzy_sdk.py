"""THE Modzy acceptance test: the published client ``modzy-sdk`` 0.11.6, unmodified, drives a real
Conveyor server: models, text / embedded / chunked-file jobs, blocking, results, cancel, history.

The server advertises a 64-byte upload chunk so that every file input goes up in several chunks,
and caps inputs at 4 KiB (jobs at 12 kB) so that the over-cap paths are real.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from modzy.error import BadRequestError, ConflictError, NotFoundError, RequestEntityTooLargeError

from conveyor.pipelines.digits import holdout_pngs
from modzy import ApiClient
from tests.helpers import Server, start_server, wait_for, wait_status
from tests.helpers.api import unique

CHUNK_BYTES = 64
MAX_INPUT_BYTES = 4096
MAX_JOB_BYTES = 12_000
POLL = 0.1
# Every field of the seed's job object, with its camelCase name.
SEED_JOB_FIELDS = {
    "jobIdentifier",
    "submittedBy",
    "accountIdentifier",
    "model",
    "status",
    "createdAt",
    "updatedAt",
    "submittedAt",
    "total",
    "pending",
    "completed",
    "failed",
    "elapsedTime",
    "queueTime",
    "timeout",
    "explain",
    "user",
    "jobInputs",
    "inputByteAmount",
    "imageClassificationModel",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("modzy"),
        extra_env={
            "CONVEYOR_MODZY_CHUNK_BYTES": str(CHUNK_BYTES),
            "CONVEYOR_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
            "CONVEYOR_MAX_JOB_BYTES": str(MAX_JOB_BYTES),
        },
    )
    yield started
    started.stop()


def _block(client: ApiClient, job: Any) -> Any:
    return client.jobs.block_until_complete(job, timeout=60, poll_interval=POLL)


def test_client_finds_the_api_from_the_bare_server_url(server: Server) -> None:
    # modzy-sdk retries with `/api/` appended when the URL it was given does not answer.
    bare = ApiClient(base_url=server.url, api_key=server.key)
    assert bare.base_url.rstrip("/").endswith("/api")
    assert {m.identifier for m in bare.models.get_all()} >= {"digits", "test-delay"}


def test_models_versions_and_lookup_by_name(client: ApiClient) -> None:
    models = {m.identifier: m for m in client.models.get_all()}
    assert {"digits", "test-delay"} <= set(models)
    digits = client.models.get("digits")
    assert digits.modelId == "digits" and digits.name == "Handwritten digits"
    assert digits.latestVersion == "1" and digits.versions == ["1"]
    assert digits.imageClassificationModel is True
    versions = client.models.get_versions("digits")
    assert [v.version for v in versions] == ["1"]
    version = client.models.get_version("digits", "1")
    assert version.inputs[0]["name"] == "input" and version.outputs[0]["name"] == "results.json"
    assert client.models.get_by_name("Handwritten digits").modelId == "digits"
    assert client.models.get_by_name("Test delay").modelId == "test-delay"
    with pytest.raises(NotFoundError):
        client.models.get("no-such-model")
    with pytest.raises(NotFoundError):
        client.models.get_version("digits", "99")
    with pytest.raises(NotFoundError):
        client.models.get_by_name("no model has this name")


def test_text_job_runs_to_completion_with_every_seed_field(client: ApiClient, server: Server) -> None:
    sources = {"first": {"input.txt": "hello"}, "second": {"input.txt": "conveyor!"}}
    job = client.jobs.submit_text("test-delay", "1", sources)
    assert job.status in {"SUBMITTED", "IN_PROGRESS", "COMPLETED"}
    done = _block(client, job)
    assert done.status == "COMPLETED"
    assert set(done) >= SEED_JOB_FIELDS
    prefix = server.key.split(".")[0]
    assert done.submittedBy == prefix and server.key.split(".")[1] not in str(dict(done))
    assert done.model == {"identifier": "test-delay", "version": "1", "name": "Test delay"}
    assert (done.total, done.pending, done.completed, done.failed) == (2, 0, 2, 0)
    assert done.inputByteAmount == len("hello") + len("conveyor!")
    assert done.imageClassificationModel is False and done.explain is False and done.timeout is None
    assert done.user["accessKey"] == prefix and done.user["name"] == "tests"
    assert [i["identifier"] for i in done.jobInputs] == ["first", "second"]
    assert done.elapsedTime >= 0 and done.queueTime >= 0
    for stamp in (done.createdAt, done.updatedAt, done.submittedAt):
        assert datetime.fromisoformat(stamp).tzinfo is not None

    result = client.results.block_until_complete(job, timeout=30, poll_interval=POLL)
    assert result.finished is True and result.jobIdentifier == job.jobIdentifier
    assert (result.total, result.completed, result.failed) == (2, 2, 0)
    assert result.get_source_outputs("first")["results.json"] == {"bytes": 5}
    assert result.get_source_outputs("second")["results.json"] == {"bytes": 9}
    assert result.results["first"]["status"] == "SUCCESSFUL"
    assert job.get_result().get_first_outputs()["results.json"]["bytes"] in {5, 9}


def test_embedded_images_are_classified(client: ApiClient) -> None:
    samples = holdout_pngs(limit=12)
    sources = {name: {"image": png} for name, png, _ in samples}
    job = client.jobs.submit_embedded("digits", "1", sources)
    assert _block(client, job).status == "COMPLETED"
    result = client.results.get(job)
    labels = {name: result.get_source_outputs(name)["results.json"]["label"] for name, _, _ in samples}
    correct = sum(labels[name] == truth for name, _, truth in samples)
    assert correct >= 10, labels  # the classifier is ~97% accurate on the held-out half
    assert client.jobs.get(job).imageClassificationModel is True


def test_chunked_file_inputs_are_assembled_exactly(client: ApiClient, native: httpx.Client) -> None:
    samples = holdout_pngs(limit=6)
    assert all(len(png) > 2 * CHUNK_BYTES for _, png, _ in samples)  # really several chunks each
    sources = {name: {"image": io.BytesIO(png)} for name, png, _ in samples}
    job = client.jobs.submit_file("digits", "1", sources)
    assert job.status in {"SUBMITTED", "IN_PROGRESS", "COMPLETED"}
    done = _block(client, job)
    assert done.status == "COMPLETED" and done.total == len(samples)
    # The stored items are byte-for-byte the uploaded files: same sizes, same predictions as embedded.
    assert [(i["identifier"], i["inputByteAmount"]) for i in done.jobInputs] == [
        (name, len(png)) for name, png, _ in samples
    ]
    assert done.inputByteAmount == sum(len(png) for _, png, _ in samples)
    embedded = client.jobs.submit_embedded("digits", "1", {name: {"image": png} for name, png, _ in samples})
    _block(client, embedded)
    by_file, by_embedded = client.results.get(job), client.results.get(embedded)
    for name, _, _ in samples:
        output = by_file.get_source_outputs(name)["results.json"]
        assert output == by_embedded.get_source_outputs(name)["results.json"]
        assert set(output) == {"label", "score", "top_k"}


def test_file_input_over_the_cap_is_refused_and_nothing_is_half_written(client: ApiClient) -> None:
    too_big = b"x" * (MAX_INPUT_BYTES + 1)
    tag = unique("cap")
    with pytest.raises(RequestEntityTooLargeError):
        client.jobs.submit_file("test-delay", "1", {tag: {"input": too_big}})
    # The client cancels the job it opened when an upload fails: it is CANCELED with no items.
    jobs = client.jobs.get_history(model="test-delay", status="CANCELED", sort_by="createdAt", per_page=5)
    opened = jobs[0]
    assert opened.status == "CANCELED" and opened.total == 0 and opened.jobInputs == []
    with pytest.raises(RequestEntityTooLargeError):
        client.jobs.submit_embedded("test-delay", "1", {tag: {"input": too_big}})
    # Each file fits, together they do not: refused at the file that crosses the job's cap.
    fits = b"y" * 4000
    with pytest.raises(RequestEntityTooLargeError, match="12000 bytes"):
        client.jobs.submit_file("test-delay", "1", {f"{tag}-{n}": {"input": fits} for n in range(4)})
    crossed = client.jobs.get_history(model="test-delay", status="CANCELED", per_page=1)[0]
    assert crossed.jobIdentifier != opened.jobIdentifier and crossed.total == 0


def test_open_job_waits_for_close_and_can_be_canceled(client: ApiClient) -> None:
    opened = client.http.post("/jobs", {"model": {"identifier": "test-delay", "version": "1"}})
    identifier = opened["jobIdentifier"]
    assert opened["status"] == "OPEN" and opened["total"] == 0
    client.http.post(f"/jobs/{identifier}/a/input", None, {"input": b"part one, "})
    time.sleep(0.5)  # an open job is not run, however long it waits
    job = client.jobs.get(identifier)
    assert job.status == "OPEN" and job.total == 0
    assert client.results.get(identifier).results == {}
    canceled = client.jobs.cancel(identifier)
    assert canceled.status == "CANCELED" and canceled.total == 0
    with pytest.raises(ConflictError, match="not open"):
        client.http.post(f"/jobs/{identifier}/a/input", None, {"input": b"too late"})


def test_close_without_uploads_is_a_clear_400(client: ApiClient, native: httpx.Client) -> None:
    name = unique("open")
    opened = client.http.post("/jobs", {"model": {"identifier": "test-delay", "version": "1"}, "name": name})
    with pytest.raises(BadRequestError, match="no uploaded inputs"):
        client.http.post(f"/jobs/{opened['jobIdentifier']}/close")
    assert client.jobs.get(opened["jobIdentifier"]).status == "OPEN"
    # The native dialect sees a CREATED job that only closing may queue.
    (job,) = native.get("/api/v2/jobs/", params={"search": name}).json()["results"]
    assert job["status"] == "CREATED" and job["job_identifier"] == opened["jobIdentifier"]
    refused = native.post(f"/api/v2/jobs/{job['id']}/run/")
    assert refused.status_code == 409 and "close" in refused.json()["message"]
    client.jobs.cancel(opened["jobIdentifier"])


def test_cancel_a_running_job(client: ApiClient, native: httpx.Client) -> None:
    body = {
        "name": unique("modzy-cancel"),
        "pipeline": "test-delay",
        "inputs": [{"name": f"i{n}", "kind": "text", "data": "x"} for n in range(20)],
        "config": {"item_seconds": 0.5},
    }
    created = native.post("/api/v2/jobs/?start_now=true", json=body).json()
    identifier = created["job_identifier"]
    wait_for(lambda: client.jobs.get(identifier).status == "IN_PROGRESS", what="job running")
    assert client.jobs.cancel(identifier).status == "CANCELED"  # at once, while workers stop
    assert _block(client, identifier).status == "CANCELED"
    # Once the workers have stopped (natively REVOKED) the counters and results stay put.
    wait_status(native, created["id"], {"REVOKED"}, 30)
    done = client.jobs.get(identifier)
    assert done.status == "CANCELED" and done.finishedAt is not None
    assert done.completed < done.total == 20
    result = client.results.get(identifier)
    assert result.finished is True and len(result.results) == done.completed


def test_history_filters_sorting_and_paging(server: Server, client: ApiClient) -> None:
    name = unique("historian")
    key = server.create_key(name=name)
    mine = ApiClient(base_url=f"{server.url}/api", api_key=key)
    before = datetime.now(UTC) - timedelta(seconds=1)
    submitted = [
        mine.jobs.submit_text("test-delay", "1", {f"s{n}": {"input": "t" * (n + 1)}}) for n in range(3)
    ]
    for job in submitted:
        _block(mine, job)
    failing = {
        "name": unique("modzy-fails"),
        "pipeline": "test-delay",
        "inputs": [{"name": "bad", "kind": "text", "data": "x"}],
        "config": {"fail_names": ["bad"]},
    }
    with server.client(key) as c:
        failed_id = c.post("/api/v2/jobs/?start_now=true", json=failing).json()["job_identifier"]
    assert _block(mine, failed_id).status == "FAILED"
    ids = [j.jobIdentifier for j in submitted]

    by_user = client.jobs.get_history(user=name, sort_by="createdAt", direction="asc", per_page=50)
    assert [j.jobIdentifier for j in by_user] == [*ids, failed_id]
    prefix = key.split(".")[0]
    assert {j.submittedBy for j in by_user} == {prefix}
    by_key = client.jobs.get_history(access_key=prefix, status="terminated", per_page=50)
    assert {j.jobIdentifier for j in by_key} == {*ids, failed_id}
    newest_first = client.jobs.get_history(access_key=prefix, direction="desc", per_page=50)
    assert [j.jobIdentifier for j in newest_first] == [failed_id, *reversed(ids)]
    assert [j.jobIdentifier for j in client.jobs.get_history(access_key=prefix, status="FAILED")] == [
        failed_id
    ]
    assert client.jobs.get_history(access_key=prefix, status="pending") == []
    assert client.jobs.get_history(access_key=prefix, status="timedout") == []
    completed = client.jobs.get_history(access_key=prefix, status="COMPLETED", model="test-delay")
    assert {j.jobIdentifier for j in completed} == set(ids)
    assert client.jobs.get_history(access_key=prefix, model="digits") == []
    assert len(client.jobs.get_history(access_key=prefix, model="Test delay")) == 4

    page1 = client.jobs.get_history(
        access_key=prefix, sort_by="createdAt", direction="asc", page=1, per_page=3
    )
    page2 = client.jobs.get_history(
        access_key=prefix, sort_by="createdAt", direction="asc", page=2, per_page=3
    )
    assert [j.jobIdentifier for j in page1 + page2] == [*ids, failed_id]

    assert len(client.jobs.get_history(access_key=prefix, start_date=before, per_page=50)) == 4
    assert client.jobs.get_history(access_key=prefix, start_date=datetime.now(UTC) + timedelta(hours=1)) == []
    assert client.jobs.get_history(access_key=prefix, end_date=before) == []
    by_size = client.jobs.get_history(access_key=prefix, sort_by="status", direction="asc", per_page=50)
    assert by_size[0].jobIdentifier == failed_id  # FAILURE sorts before SUCCESS

    for bad in (
        {"status": "bogus"},
        {"sort_by": "nonsense"},
        {"direction": "sideways"},
        {"start_date": "soon"},
    ):
        with pytest.raises(BadRequestError):
            client.jobs.get_history(**bad)


def test_errors_have_modzy_shape_and_status_codes(server: Server, client: ApiClient) -> None:
    with pytest.raises(NotFoundError):
        client.jobs.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFoundError):
        client.results.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(BadRequestError, match="no-such-model"):
        client.jobs.submit_text("no-such-model", "1", {"a": {"input": "x"}})
    with pytest.raises(BadRequestError, match="one model input"):
        client.jobs.submit_text("test-delay", "1", {"a": {"x": "1", "y": "2"}})
    with pytest.raises(BadRequestError, match="explain"):
        client.jobs.submit_text("test-delay", "1", {"a": {"input": "x"}}, explain=True)
    with pytest.raises(BadRequestError, match="not valid base64"):
        client.http.post(
            "/jobs",
            {
                "model": {"identifier": "digits", "version": "1"},
                "input": {"type": "embedded", "sources": {"a": {"i": "%%%"}}},
            },
        )
    response = httpx.get(f"{server.url}/api/jobs/history", headers={"Authorization": "ApiKey nope.nope"})
    body = response.json()
    assert response.status_code == 401
    assert body["statusCode"] == 401 and body["status"] == "UNAUTHORIZED" and body["message"]
    with pytest.raises(ValueError):  # what modzy-sdk raises for a key the server refuses
        ApiClient(base_url=f"{server.url}/api", api_key="nope.nope")


def test_timeout_is_kept_in_milliseconds(client: ApiClient) -> None:
    job = client.http.post(
        "/jobs",
        {
            "model": {"identifier": "test-delay", "version": "1"},
            "timeout": 60_000,
            "input": {"type": "text", "sources": {"a": {"input": "x"}}},
        },
    )
    assert job["timeout"] == 60_000
    assert _block(client, job["jobIdentifier"]).status == "COMPLETED"
