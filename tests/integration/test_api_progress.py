"""Counters, items, stages, logs and transitions of jobs as the native API reports them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import Server, text_inputs, wait_for
from tests.helpers.api import JOBS, all_items, all_logs, finished, get_job, submit, unique

ITEM_TO_COUNTER = {"SUCCESS": "completed", "FAILURE": "failed", "CANCELED": "canceled", "PENDING": "pending"}


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def assert_counters_match(client: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished job: counters add up, and agree with its items (listed and filtered by status)."""
    assert job["pending"] == 0, job
    assert job["completed"] + job["failed"] + job["canceled"] == job["total"], job
    items = all_items(client, job["id"])
    assert len(items) == job["total"]
    by_status = Counter(i["status"] for i in items)
    for status, counter in ITEM_TO_COUNTER.items():
        assert by_status.get(status, 0) == job[counter], (status, by_status, job[counter])
        page = client.get(f"{JOBS}{job['id']}/items/", params={"status": status, "limit": 1000}).json()
        assert page["count"] == job[counter], (status, page["count"])
        assert {i["status"] for i in page["results"]} <= {status}
    return items


def test_counters_and_items_after_injected_failures(client: httpx.Client) -> None:
    job = submit(client, name=unique("fail-names"), n=6, config={"fail_names": ["item-1", "item-4"]})
    done = finished(client, job["id"])
    # 2 of 6 failed: within the default max_failed_ratio of 0.5.
    assert done["status"] == "SUCCESS"
    assert (done["completed"], done["failed"], done["canceled"]) == (4, 2, 0)
    items = assert_counters_match(client, done)
    for item in items:
        if item["name"] in {"item-1", "item-4"}:
            assert item["status"] == "FAILURE" and item["error"] and item["result"] is None, item
        else:
            assert item["status"] == "SUCCESS" and item["error"] is None and item["result"], item
    both = client.get(f"{JOBS}{job['id']}/items/", params={"status": "FAILURE,SUCCESS"}).json()
    assert both["count"] == 6


def test_counters_after_early_stop(client: httpx.Client) -> None:
    names = [f"item-{i}" for i in range(8)]
    job = submit(
        client,
        name=unique("early-stop"),
        n=20,
        config={"fail_names": names, "item_seconds": 0.02},
        max_failed_ratio=0.25,
    )
    done = finished(client, job["id"])
    assert done["status"] == "FAILURE"
    assert done["failed"] > 0.25 * done["total"]
    assert_counters_match(client, done)


def test_items_pagination_by_seq(client: httpx.Client) -> None:
    job = submit(client, name=unique("items-pages"), n=7)
    finished(client, job["id"])
    seen: list[int] = []
    response = client.get(f"{JOBS}{job['id']}/items/", params={"limit": 3})
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == 7
        assert len(page["results"]) <= 3
        seen += [i["seq"] for i in page["results"]]
        if page["next"] is None:
            break
        response = client.get(page["next"])
    assert seen == list(range(7))


def test_stages_of_a_successful_job(client: httpx.Client) -> None:
    job = submit(client, name=unique("stages"), n=3)
    keys = [s["key"] for s in job["progress"]["stages"]]
    assert keys == ["process", "results"]
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    stages = done["progress"]["stages"]
    assert [s["key"] for s in stages] == ["process", "results"]
    for stage in stages:
        assert stage["status"] == "SUCCESS" and stage["progress"] == 1.0, stage
        assert stage["name"]
    assert done["progress"]["summary"] == {"status": "SUCCESS", "progress": 1.0}


def test_delay_stage_runs_first_and_reaches_success(client: httpx.Client) -> None:
    job = submit(client, name=unique("delay"), n=2, delay=0.6)
    assert [s["key"] for s in job["progress"]["stages"]] == ["delay", "process", "results"]
    assert job["delay"] == 0.6
    # While the delay runs, no item may be processed.
    early = wait_for(
        lambda: (j := get_job(client, job["id"]))["status"] in {"STARTED", "SUCCESS"} and j,
        timeout=30,
        what="job started",
    )
    if early["status"] == "STARTED" and early["progress"]["stages"][0]["status"] != "SUCCESS":
        assert early["completed"] == 0
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    delay = done["progress"]["stages"][0]
    assert delay["key"] == "delay" and delay["status"] == "SUCCESS" and delay["progress"] == 1.0
    assert float(done["duration"]) >= 0.6 * 0.9
    assert done["progress"]["summary"]["progress"] == 1.0


def test_delay_only_test_job_succeeds(client: httpx.Client) -> None:
    job = submit(client, name=unique("delay-only"), inputs=[], delay=0.3)
    assert job["total"] == 0
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"
    stages = {s["key"]: s for s in done["progress"]["stages"]}
    assert stages["delay"]["status"] == "SUCCESS"
    assert done["progress"]["summary"] == {"status": "SUCCESS", "progress": 1.0}


def test_logs_paginate_and_follow(client: httpx.Client) -> None:
    job = submit(client, name=unique("logs"), n=3, delay=0.2, config={"fail_names": ["item-0"]})
    finished(client, job["id"])
    full = all_logs(client, job["id"])
    assert len(full) >= 5, full
    ids = [line["id"] for line in full]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for line in full:
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
        assert line["message"] in line["line"] and line["level"] in line["line"]

    # Follow with `after`/`last_id`, two lines at a time.
    followed: list[int] = []
    after = 0
    while True:
        page = client.get(f"{JOBS}{job['id']}/logs/", params={"after": after, "limit": 2}).json()
        assert len(page["results"]) <= 2
        if not page["results"]:
            assert page["last_id"] == after
            assert page["next"] is None
            break
        assert page["last_id"] == page["results"][-1]["id"]
        followed += [line["id"] for line in page["results"]]
        after = page["last_id"]
    assert followed == ids

    # The same walk through the `next` links.
    linked: list[int] = []
    url: str | None = f"{JOBS}{job['id']}/logs/?limit=2"
    while url:
        page = client.get(url).json()
        linked += [line["id"] for line in page["results"]]
        url = page["next"]
    assert linked == ids

    # The job's detail embeds the latest lines.
    detail = get_job(client, job["id"])
    assert detail["progress"]["logs"], "no log lines in the job detail"
    assert set(detail["progress"]["logs"]) <= {line["line"] for line in full}


def test_logs_level_filter(client: httpx.Client) -> None:
    job = submit(client, name=unique("log-level"), n=2, config={"fail_names": ["item-0"]})
    finished(client, job["id"])
    full = all_logs(client, job["id"])
    assert any(line["level"] == "INFO" for line in full)
    for level, allowed in (
        ("WARNING", {"WARNING", "ERROR"}),
        ("warning", {"WARNING", "ERROR"}),
        ("ERROR", {"ERROR"}),
        ("INFO", {"INFO", "WARNING", "ERROR"}),
    ):
        filtered = all_logs(client, job["id"], level=level)
        assert {line["level"] for line in filtered} <= allowed, (level, filtered)
        assert [line["id"] for line in filtered] == [line["id"] for line in full if line["level"] in allowed]
    assert len(all_logs(client, job["id"], level="DEBUG")) == len(full)


def test_transitions_in_order(client: httpx.Client) -> None:
    job = submit(client, name=unique("transitions"), n=2)
    finished(client, job["id"])
    events = client.get(f"{JOBS}{job['id']}/transitions/").json()
    assert [e["to_status"] for e in events] == ["CREATED", "PENDING", "STARTED", "SUCCESS"]
    assert [e["from_status"] for e in events] == [None, "CREATED", "PENDING", "STARTED"]
    stamps = [e["created_at"] for e in events]
    assert stamps == sorted(stamps)
    assert all(e["cause"] for e in events)


def test_running_job_reports_partial_progress(client: httpx.Client) -> None:
    job = submit(client, name=unique("partial"), inputs=text_inputs(12), config={"item_seconds": 0.1})

    def midway() -> dict[str, Any] | None:
        current = get_job(client, job["id"])
        return current if 0 < current["completed"] < current["total"] else None

    current = wait_for(midway, timeout=30, what="job midway")
    assert current["status"] == "STARTED"
    assert current["completed"] + current["failed"] + current["pending"] == current["total"]
    process = current["progress"]["stages"][0]
    assert process["key"] == "process" and process["status"] == "STARTED"
    assert 0 < process["progress"] < 1
    assert 0 < current["progress"]["summary"]["progress"] < 1
    assert current["finished_at"] is None and current["duration"] is None
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS"


def test_items_pagination_has_no_empty_last_page(client: httpx.Client) -> None:
    job = submit(client, name=unique("items-exact"), n=6)
    finished(client, job["id"])
    first = client.get(f"{JOBS}{job['id']}/items/", params={"limit": 3}).json()
    assert [i["seq"] for i in first["results"]] == [0, 1, 2] and first["next"] is not None
    second = client.get(first["next"]).json()
    assert [i["seq"] for i in second["results"]] == [3, 4, 5]
    assert second["next"] is None  # the page was exactly full, yet nothing follows it
