"""Submitting jobs through the native API: the job document, start_now/run, pipelines, inputs, timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server
from tests.helpers.api import (
    ANTENNA_JOB_KEYS,
    JOBS,
    MODZY_JOB_KEYS,
    PIPELINE_KEYS,
    PROJECT_KEYS,
    all_items,
    assert_error,
    b64,
    finished,
    get_job,
    submit,
    ts,
    unique,
)


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def _pipeline(client: httpx.Client, slug: str) -> dict[str, Any]:
    listed = client.get("/api/v2/pipelines/")
    assert listed.status_code == 200, listed.text
    found = [p for p in listed.json() if p["slug"] == slug]
    assert found, f"pipeline {slug} not installed"
    latest: dict[str, Any] = max(found, key=lambda p: p["version"])
    return latest


def assert_job_document(job: dict[str, Any]) -> None:
    """Every key of Antenna's job instance (seed 003) plus Modzy's counters and timings."""
    missing = (ANTENNA_JOB_KEYS | MODZY_JOB_KEYS) - set(job)
    assert not missing, f"job lacks {sorted(missing)}"
    assert set(job["project"]) >= PROJECT_KEYS, job["project"]
    assert job["pipeline"] is not None
    assert set(job["pipeline"]) >= PIPELINE_KEYS, job["pipeline"]
    progress = job["progress"]
    assert {"summary", "stages", "errors", "logs"} <= set(progress)
    assert {"status", "progress"} <= set(progress["summary"])
    assert progress["stages"], "no stages"
    for stage in progress["stages"]:
        assert {"status", "progress", "key", "name", "params"} <= set(stage), stage
        assert isinstance(stage["params"], list)
    assert isinstance(progress["errors"], list) and isinstance(progress["logs"], list)
    assert {"stdout", "stderr"} <= set(job["logs"])
    assert isinstance(job["logs"]["stdout"], list) and isinstance(job["logs"]["stderr"], list)
    assert {"name", "key"} <= set(job["job_type"])
    assert isinstance(job["user_permissions"], list)
    for key in ("total", "pending", "completed", "failed", "input_byte_amount"):
        assert isinstance(job[key], int), (key, job[key])
    assert isinstance(job["explain"], bool)
    assert isinstance(job["image_classification_model"], bool)
    assert isinstance(job["account"], str) and job["account"]
    assert job["details"].endswith(f"/api/v2/jobs/{job['id']}/")


def test_submit_returns_the_full_job_document(shared_server: Server, client: httpx.Client) -> None:
    name = unique("doc")
    response = client.post(
        f"{JOBS}?start_now=true",
        json={
            "name": name,
            "pipeline": "test-delay",
            "inputs": [{"name": f"x{i}", "kind": "text", "data": f"x{i}"} for i in range(3)],
            "timeout": 60_000,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert_job_document(created)
    assert created["name"] == name
    assert created["status"] in {"PENDING", "STARTED", "SUCCESS"}
    assert created["total"] == 3
    assert created["timeout"] == 60_000
    assert created["explain"] is False
    assert created["job_type"] == {"name": "ML pipeline", "key": "ml"}
    assert created["pipeline"]["slug"] == "test-delay"
    prefix, _, secret = shared_server.key.partition(".")
    assert created["submitted_by"] == prefix
    assert secret not in response.text

    # The Antenna `details` links lead to the job, its project and its pipeline.
    assert client.get(created["details"]).json()["id"] == created["id"]
    assert client.get(created["project"]["details"]).json()["id"] == created["project"]["id"]
    assert client.get(created["pipeline"]["details"]).json()["slug"] == "test-delay"

    detail = get_job(client, created["id"])
    assert_job_document(detail)
    assert secret not in client.get(f"{JOBS}{created['id']}/").text
    done = finished(client, created["id"])
    assert_job_document(done)
    assert done["status"] == "SUCCESS"
    assert (done["total"], done["pending"], done["completed"], done["failed"]) == (3, 0, 3, 0)
    assert done["submitted_by"] == prefix


def test_without_start_now_the_job_waits_for_run(client: httpx.Client) -> None:
    job = submit(client, name=unique("run-later"), n=2, start_now=False)
    assert job["status"] == "CREATED"
    assert job["started_at"] is None and job["finished_at"] is None
    time.sleep(1.2)
    still = get_job(client, job["id"])
    assert still["status"] == "CREATED"
    assert still["started_at"] is None and still["queue_time_ms"] is None
    assert still["pending"] == 2 and still["completed"] == 0
    assert all(i["status"] == "PENDING" and i["attempts"] == 0 for i in all_items(client, job["id"]))
    events = client.get(f"{JOBS}{job['id']}/transitions/").json()
    assert [e["to_status"] for e in events] == ["CREATED"]

    ran = client.post(f"{JOBS}{job['id']}/run/")
    assert ran.status_code == 200, ran.text
    assert ran.json()["status"] in {"PENDING", "STARTED", "SUCCESS"}
    second = client.post(f"{JOBS}{job['id']}/run/")
    assert_error(second, 409)
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    assert_error(client.post(f"{JOBS}{job['id']}/run/"), 409)


def test_pipeline_by_slug_and_by_id(client: httpx.Client) -> None:
    described = _pipeline(client, "test-delay")
    by_slug = submit(client, name=unique("by-slug"), n=1)
    by_id = submit(client, name=unique("by-id"), n=1, pipeline=None, pipeline_id=described["id"])
    for job in (by_slug, by_id):
        assert job["pipeline"]["id"] == described["id"]
        assert job["pipeline"]["slug"] == "test-delay"
        assert job["pipeline"]["version"] == described["version"]
        assert finished(client, job["id"])["status"] == "SUCCESS"
    one = client.get(f"/api/v2/pipelines/{described['id']}/")
    assert one.status_code == 200 and one.json()["slug"] == "test-delay"
    digits = _pipeline(client, "digits")
    assert digits["input_kinds"] == ["base64"]
    assert digits["image_classification_model"] is True


def test_input_byte_amount_is_the_sum_of_decoded_bytes(client: httpx.Client) -> None:
    blobs = [b"\x00\x01\x02binary\xff", b"", b"x" * 1000]
    texts = ["héllo wörld ✓", "plain", ""]
    inputs = [{"name": f"t{i}", "kind": "text", "data": t} for i, t in enumerate(texts)]
    inputs += [{"name": f"b{i}", "kind": "base64", "data": b64(b)} for i, b in enumerate(blobs)]
    inputs.append({"name": "uri", "kind": "base64", "data": "data:image/png;base64," + b64(b"\x89PNG-ish")})
    expected = {f"t{i}": len(t.encode()) for i, t in enumerate(texts)}
    expected |= {f"b{i}": len(b) for i, b in enumerate(blobs)}
    expected["uri"] = len(b"\x89PNG-ish")

    job = submit(client, name=unique("bytes"), inputs=inputs)
    assert job["input_byte_amount"] == sum(expected.values())
    assert job["total"] == len(inputs)
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    items = all_items(client, job["id"])
    assert {i["name"]: i["byte_size"] for i in items} == expected
    # test-delay echoes the byte count it was given: the worker saw the decoded bytes.
    assert {i["name"]: i["result"]["bytes"] for i in items} == expected
    assert {i["name"]: i["kind"] for i in items} == {i["name"]: i["kind"] for i in inputs}


def test_limit_keeps_the_first_inputs(client: httpx.Client) -> None:
    job = submit(client, name=unique("limit"), n=5, limit=2)
    assert job["limit"] == 2 and job["total"] == 2
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    assert [i["name"] for i in all_items(client, job["id"])] == ["item-0", "item-1"]


def test_shuffle_keeps_every_input(client: httpx.Client) -> None:
    job = submit(client, name=unique("shuffle"), n=8, shuffle=True)
    assert job["shuffle"] is True and job["total"] == 8
    assert finished(client, job["id"])["status"] == "SUCCESS"
    items = all_items(client, job["id"])
    assert sorted(i["name"] for i in items) == sorted(f"item-{i}" for i in range(8))
    assert sorted(i["seq"] for i in items) == list(range(8))


def test_digits_over_real_holdout_images(client: httpx.Client) -> None:
    samples = holdout_pngs(limit=60)
    inputs = [{"name": name, "kind": "base64", "data": b64(png)} for name, png, _ in samples]
    labels = {name: label for name, _, label in samples}
    job = submit(client, name=unique("digits"), pipeline="digits", inputs=inputs)
    assert job["image_classification_model"] is True
    assert job["input_byte_amount"] == sum(len(png) for _, png, _ in samples)
    done = finished(client, job["id"], timeout=120)
    assert done["status"] == "SUCCESS", done["progress"]
    assert (done["completed"], done["failed"], done["pending"]) == (len(samples), 0, 0)
    assert [s["key"] for s in done["progress"]["stages"]] == ["classify", "results"]
    items = all_items(client, job["id"])
    assert len(items) == len(samples)
    correct = 0
    for item in items:
        assert item["status"] == "SUCCESS", item
        result = item["result"]
        assert 0 <= result["label"] <= 9 and 0.0 <= result["score"] <= 1.0
        assert result["top_k"][0]["label"] == result["label"]
        correct += result["label"] == labels[item["name"]]
    assert correct / len(items) >= 0.9, f"accuracy {correct}/{len(items)}"


def test_timestamps_are_iso_with_timezone_and_consistent(client: httpx.Client) -> None:
    job = submit(client, name=unique("times"), n=4, config={"item_seconds": 0.05})
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    created, updated = ts(done["created_at"]), ts(done["updated_at"])
    submitted, started, ended = ts(done["submitted_at"]), ts(done["started_at"]), ts(done["finished_at"])
    assert created <= submitted <= started <= ended <= updated
    assert ts(done["pipeline"]["created_at"]) <= created
    ts(done["pipeline"]["updated_at"])

    span = (ended - started).total_seconds()
    assert float(done["duration"]) == pytest.approx(span, abs=1e-3)
    assert span >= 4 * 0.05 * 0.9, "four items of 50 ms each cannot finish faster"
    assert done["elapsed_time_ms"] == pytest.approx(span * 1000, abs=2)
    assert done["queue_time_ms"] == pytest.approx((started - submitted).total_seconds() * 1000, abs=2)
    assert done["queue_time_ms"] >= 0

    for item in all_items(client, job["id"]):
        item_start, item_end = ts(item["started_at"]), ts(item["finished_at"])
        assert started - timedelta(milliseconds=5) <= item_start <= item_end <= ended
        assert item["duration_ms"] == pytest.approx((item_end - item_start).total_seconds() * 1000, abs=2)
    for event in client.get(f"{JOBS}{job['id']}/transitions/").json():
        ts(event["created_at"])
    for line in client.get(f"{JOBS}{job['id']}/logs/").json()["results"]:
        ts(line["created_at"])
