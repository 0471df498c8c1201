"""Operations: Prometheus /metrics, X-Request-ID, JSON logs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Server
from tests.helpers.api import JOBS, finished, submit, unique
from tests.sse import SseReader


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_jobs_items_queue_and_workers_exactly(server_factory: Callable[..., Server]) -> None:
    # No workers: what is queued stays queued, so the queue depth is exact.
    server = server_factory(workers=0, extra_env={"CONVEYOR_CHUNK_SIZE": "2"})
    with server.client() as c:
        submit(c, name=unique("m-queued"), n=5)  # 3 chunks of at most 2 items
        created = submit(c, name=unique("m-created"), n=1, start_now=False)
        assert c.post(f"{JOBS}{created['id']}/cancel/").status_code == 200
    metrics = scrape(server)
    assert metrics[("conveyor_queue_depth", ())] == 3
    assert metrics[("conveyor_chunks_open", (("state", "queued"),))] == 3
    assert metrics[("conveyor_jobs", (("status", "PENDING"),))] == 1
    assert metrics[("conveyor_jobs", (("status", "REVOKED"),))] == 1
    assert metrics[("conveyor_jobs", (("status", "SUCCESS"),))] == 0
    assert metrics[("conveyor_workers", (("state", "alive"),))] == 0
    assert metrics[("conveyor_workers_busy", ())] == 0


def test_metrics_follow_processed_and_failed_items_and_chunk_latency(
    shared_server: Server, client: httpx.Client
) -> None:
    def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
        return metrics.get((name, (("pipeline", "test-delay"),)), 0.0)

    before = scrape(shared_server)
    job = submit(client, name=unique("m-items"), n=6, config={"fail_names": ["item-1", "item-4"]})
    assert finished(client, job["id"])["status"] == "SUCCESS"
    after = scrape(shared_server)
    # Other tests' jobs may finish meanwhile on the shared server: at least ours is counted.
    assert value(after, "conveyor_items_processed") - value(before, "conveyor_items_processed") >= 4
    assert value(after, "conveyor_items_failed") - value(before, "conveyor_items_failed") >= 2
    assert value(after, "conveyor_chunk_latency_seconds_count") > value(
        before, "conveyor_chunk_latency_seconds_count"
    )
    assert after[("conveyor_workers", (("state", "alive"),))] == 2
    assert after[("conveyor_jobs", (("status", "SUCCESS"),))] >= 1


def test_request_ids_are_kept_or_made_and_echoed(shared_server: Server, client: httpx.Client) -> None:
    given = client.get(JOBS, headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = client.get(JOBS)
    assert len(made.headers["x-request-id"]) == 32
    assert made.headers["x-request-id"] != client.get(JOBS).headers["x-request-id"]
    unsafe = client.get(JOBS, headers={"X-Request-ID": "x" * 300})
    assert len(unsafe.headers["x-request-id"]) == 32
    anonymous = httpx.get(f"{shared_server.url}{JOBS}", headers={"X-Request-ID": "no-key-1"}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["x-request-id"] == "no-key-1"
    job = submit(client, name=unique("rid"), n=1, start_now=False)
    with SseReader(
        shared_server.url,
        f"{JOBS}{job['id']}/events/",
        key=shared_server.key,
        headers={"X-Request-ID": "sse-1"},
    ) as reader:
        reader.wait(lambda e: e.event == "job")
    client.post(f"{JOBS}{job['id']}/cancel/")


def test_json_logs_carry_the_request_id(server_factory: Callable[..., Server]) -> None:
    server = server_factory(
        workers=1, extra_env={"CONVEYOR_LOG_FORMAT": "json"}, extra_args=["--log-level", "info"]
    )
    with server.client() as c:
        assert c.get(JOBS, headers={"X-Request-ID": "json-log-check"}).status_code == 200
        job = submit(c, name=unique("json-log"), n=1)
        finished(c, job["id"])
    assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Everything logged is JSON; only the CLI's final plain message is not a log record.
    assert len(records) == len(lines) - 1, [line for line in lines if not line.startswith("{")]
    assert {"time", "level", "logger", "message", "process"} <= set(records[0])
    tagged = [r for r in records if r.get("request_id") == "json-log-check"]
    assert tagged and "GET /api/v2/jobs/" in tagged[0]["message"]
    assert any(r["process"] == "worker-0" for r in records), "worker processes log JSON too"
