"""The contract every backend combination must honour, run unchanged against each of them.

``deployment`` (``conftest.py``) is one of: SQLite + local workers, PostgreSQL + local
workers, PostgreSQL + Celery on Redis, PostgreSQL + Celery on RabbitMQ. Every test talks to
the API over HTTP and checks the counters against the item rows of the deployment's own
database. Tests wait for their jobs to finish, so they never disturb the next one.
"""

from __future__ import annotations

import base64
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import sqlalchemy as sa

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import TERMINAL_STATUSES as FINISHED
from tests.helpers import assert_counters_match_rows, wait_for, wait_status
from tests.helpers.deployments import Deployment
from tests.helpers.inputs import FileServer


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def detail(deployment: Deployment, job_id: int) -> dict[str, Any]:
    with deployment.client() as client:
        response = client.get(f"/api/v2/jobs/{job_id}/")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def finish(deployment: Deployment, job_id: int, timeout: float = 60) -> dict[str, Any]:
    with deployment.client() as client:
        return wait_status(client, job_id, FINISHED, timeout=timeout)


def transitions(deployment: Deployment, job_id: int) -> list[dict[str, Any]]:
    with deployment.client() as client:
        response = client.get(f"/api/v2/jobs/{job_id}/transitions/")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def assert_counters_match_items(deployment: Deployment, job: dict[str, Any]) -> list[tuple[int, str, int]]:
    rows = deployment.items(job["id"])
    assert_counters_match_rows(job, rows)
    return rows


def started(deployment: Deployment, job_id: int, completed: int = 3) -> None:
    wait_for(
        lambda: detail(deployment, job_id)["completed"] >= completed,
        30,
        what=f"job {job_id} to have {completed} items done",
    )


# ------------------------------------------------------------------ submit, counters, stages


def test_inputs_by_reference_run_once_and_a_missing_one_fails_alone(
    deployment: Deployment, contract_files: FileServer
) -> None:
    """Inline bytes through the blob store (S3 in the Celery deployments), URLs listed by a
    manifest's collect stage and fetched by the workers; one missing URL fails one item."""
    tag = deployment.prefix
    bodies = {f"{tag}-{i}.bin": bytes([i]) * (100 + i) for i in range(12)}
    urls = [contract_files.add(f"/{tag}/{name}", body) for name, body in bodies.items()]
    urls[5] = contract_files.base + f"/{tag}/missing.bin"
    contract_files.add(f"/{tag}/list.txt", "".join(u + "\n" for u in urls).encode())
    inline = [
        {"name": f"inline-{i}", "kind": "base64", "data": base64.b64encode(b"x" * (200 + i)).decode()}
        for i in range(3)
    ]
    job = deployment.submit(
        0,
        name="by-reference",
        inputs=[*inline, {"kind": "manifest", "data": f"{contract_files.base}/{tag}/list.txt"}],
    )
    final = finish(deployment, job["id"], timeout=60)
    assert final["status"] == "SUCCESS", final["progress"]["logs"][-5:]
    assert (final["total"], final["completed"], final["failed"]) == (15, 14, 1)
    assert_counters_match_items(deployment, final)
    with deployment.client() as client:
        items = client.get(f"/api/v2/jobs/{job['id']}/items/", params={"limit": 100}).json()["results"]
    sizes = {i["name"]: (i["result"] or {}).get("bytes") for i in items}
    expected = {f"inline-{i}": 200 + i for i in range(3)}
    expected.update({name: len(body) for n, (name, body) in enumerate(bodies.items()) if n != 5})
    assert {k: v for k, v in sizes.items() if v is not None} == expected
    (missing,) = [i for i in items if i["status"] == "FAILURE"]
    assert missing["name"] == "missing.bin" and missing["error"].startswith("input_unavailable:")
    with deployment.engine.connect() as conn:
        refs = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT ref FROM items WHERE job_id = :j AND seq < 3"), {"j": job["id"]}
            )
        ]
        data = [
            r[0] for r in conn.execute(sa.text("SELECT data FROM items WHERE job_id = :j"), {"j": job["id"]})
        ]
    assert all(ref.startswith("blob:") for ref in refs) and all(d is None for d in data)


def test_submit_runs_every_item_once_and_counters_are_exact(deployment: Deployment) -> None:
    job = deployment.submit(23, name="submit")
    assert job["status"] == "PENDING" and job["total"] == 23
    final = finish(deployment, job["id"], timeout=30)
    assert final["status"] == "SUCCESS"
    assert final["dispatch_mode"] == ("celery" if deployment.celery else "internal")
    assert (final["total"], final["completed"], final["failed"], final["canceled"], final["pending"]) == (
        23,
        23,
        0,
        0,
        0,
    )
    rows = assert_counters_match_items(deployment, final)
    assert (
        rows == [(seq, "SUCCESS", 1) for seq in range(len(rows))]
        or [r[1:] for r in rows] == [("SUCCESS", 1)] * 23
    )
    # 23 items in chunks of 5: five item chunks, each run exactly once.
    chunks = deployment.chunks(job["id"])
    assert [(kind, status, attempts) for _, kind, status, attempts, _ in chunks] == [("items", "DONE", 1)] * 5
    events = transitions(deployment, job["id"])
    assert [e["to_status"] for e in events][-2:] == ["STARTED", "SUCCESS"]


def test_stages_and_progress_summary_at_success(deployment: Deployment) -> None:
    job = deployment.submit(6, name="stages", config={"item_seconds": 0.01})
    final = finish(deployment, job["id"], timeout=30)
    assert final["status"] == "SUCCESS"
    progress = final["progress"]
    assert progress["summary"] == {"status": "SUCCESS", "progress": 1.0}
    stages = [(s["key"], s["status"], s["progress"]) for s in progress["stages"]]
    assert stages == [("process", "SUCCESS", 1.0), ("results", "SUCCESS", 1.0)]
    assert progress["errors"] == []
    assert final["queue_time_ms"] is not None and final["elapsed_time_ms"] is not None
    assert ts(final["submitted_at"]) <= ts(final["started_at"]) <= ts(final["finished_at"])


def test_the_delay_stage_runs_before_the_items(deployment: Deployment) -> None:
    job = deployment.submit(8, name="delay", delay=0.5)
    final = finish(deployment, job["id"], timeout=30)
    assert final["status"] == "SUCCESS"
    assert final["completed"] == 8
    assert (ts(final["finished_at"]) - ts(final["started_at"])).total_seconds() >= 0.5
    stages = [(s["key"], s["status"], s["progress"]) for s in final["progress"]["stages"]]
    assert stages == [("delay", "SUCCESS", 1.0), ("process", "SUCCESS", 1.0), ("results", "SUCCESS", 1.0)]
    assert final["progress"]["summary"]["progress"] == 1.0
    kinds = [(kind, status) for _, kind, status, _, _ in deployment.chunks(job["id"])]
    assert kinds == [("delay", "DONE"), ("items", "DONE"), ("items", "DONE")]
    assert [a for _, _, a in assert_counters_match_items(deployment, final)] == [1] * 8


# ------------------------------------------------------------------ cancel, retry, timeout, early stop


def test_cancel_of_a_running_job_is_revoked_within_2s_and_no_write_after(
    deployment: Deployment,
) -> None:
    job = deployment.submit(120, name="cancel", config={"item_seconds": 0.05})
    started(deployment, job["id"], 4)
    with deployment.client() as client:
        response = client.post(f"/api/v2/jobs/{job['id']}/cancel/")
        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("CANCELING", "REVOKED")
        final = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
    events = transitions(deployment, job["id"])
    canceling = [e for e in events if e["to_status"] == "CANCELING"]
    assert len(canceling) == 1, events
    assert [e["to_status"] for e in events][-2:] == ["CANCELING", "REVOKED"]
    # Server-side clock: from the cancel request to REVOKED (every worker let go of its chunk).
    assert (ts(final["finished_at"]) - ts(canceling[0]["created_at"])).total_seconds() < 2.0
    assert final["completed"] >= 4
    assert final["canceled"] > 0
    snapshot = assert_counters_match_items(deployment, final)
    assert all(a <= 1 for _, _, a in snapshot)
    # No chunk is held or queued any more.
    assert not {s for _, _, s, _, _ in deployment.chunks(job["id"])} & {"LEASED", "QUEUED"}
    time.sleep(0.6)
    assert deployment.items(job["id"]) == snapshot  # no worker is still writing
    after = detail(deployment, job["id"])
    assert (after["status"], after["completed"], after["failed"], after["canceled"]) == (
        "REVOKED",
        final["completed"],
        final["failed"],
        final["canceled"],
    )


def test_retry_reruns_only_the_failed_items(deployment: Deployment) -> None:
    failing = ["item-1", "item-6", "item-8"]
    job = deployment.submit(
        10, name="retry", max_failed_ratio=1.0, config={"fail_names": failing, "item_seconds": 0.01}
    )
    first = finish(deployment, job["id"], timeout=30)
    assert first["status"] == "SUCCESS", first["status"]  # within the failure budget
    assert (first["completed"], first["failed"], first["canceled"]) == (7, 3, 0)
    rows = assert_counters_match_items(deployment, first)
    assert [(status, a) for _, status, a in rows] == [
        ("FAILURE" if i in (1, 6, 8) else "SUCCESS", 1) for i in range(10)
    ]
    with deployment.client() as client:
        response = client.post(f"/api/v2/jobs/{job['id']}/retry/")
        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("RETRY", "STARTED", "SUCCESS", "FAILURE")
    final = finish(deployment, job["id"], timeout=30)
    # The names still match fail_names, so the same three fail again; nothing else ran.
    assert final["status"] == "SUCCESS"
    assert (final["total"], final["completed"], final["failed"], final["canceled"]) == (10, 7, 3, 0)
    rows = assert_counters_match_items(deployment, final)
    assert [(status, a) for _, status, a in rows] == [
        ("FAILURE", 2) if i in (1, 6, 8) else ("SUCCESS", 1) for i in range(10)
    ]
    statuses = [e["to_status"] for e in transitions(deployment, job["id"])]
    assert statuses.count("RETRY") == 1
    assert statuses[-1] == "SUCCESS"
    # A finished job can be retried again: the same three items run a third time, no other.
    with deployment.client() as client:
        assert client.post(f"/api/v2/jobs/{job['id']}/retry/").status_code == 200
    again = finish(deployment, job["id"], timeout=30)
    assert [a for _, _, a in assert_counters_match_items(deployment, again)] == [
        3 if i in (1, 6, 8) else 1 for i in range(10)
    ]


def test_timeout_ends_timedout_within_a_second_and_keeps_finished_items(deployment: Deployment) -> None:
    job = deployment.submit(80, name="timeout", timeout=1500, config={"item_seconds": 0.05})
    final = finish(deployment, job["id"], timeout=20)
    assert final["status"] == "TIMEDOUT"
    assert final["timeout"] == 1500
    overdue = (ts(final["finished_at"]) - ts(final["submitted_at"])).total_seconds()
    assert 1.5 <= overdue < 2.5
    assert final["completed"] > 0 and final["canceled"] > 0
    rows = assert_counters_match_items(deployment, final)
    assert all(a <= 1 for _, _, a in rows)
    assert transitions(deployment, job["id"])[-1]["to_status"] == "TIMEDOUT"


def test_early_stop_when_failures_exceed_the_budget(deployment: Deployment) -> None:
    job = deployment.submit(
        200,
        name="early-stop",
        max_failed_ratio=0.1,
        config={"item_seconds": 0.01, "fail_rate": 1.0, "batch_size": 5},
    )
    final = finish(deployment, job["id"], timeout=30)
    assert final["status"] == "FAILURE"
    assert final["failed"] > 20  # the budget allowed 20
    assert final["canceled"] > 0  # the rest was dropped, not ground through
    assert final["completed"] == 0
    assert_counters_match_items(deployment, final)
    assert "stopping early" in transitions(deployment, job["id"])[-1]["cause"]


# ------------------------------------------------------------------ kill -9, concurrent writers


def test_kill_9_of_a_worker_mid_chunk_loses_and_doubles_nothing(deployment: Deployment) -> None:
    # 4 chunks of 5 items x 0.25 s: a chunk runs 1.25 s, so the kill lands well inside one.
    job = deployment.submit(20, name="kill-9", config={"item_seconds": 0.25})
    started(deployment, job["id"], 2)
    chunk_id, victim = deployment.kill_a_worker_holding_a_chunk(job["id"])
    # The dead process can no longer release its lease: the chunk was killed mid-way.
    held = {cid: (status, leased_by) for cid, _, status, _, leased_by in deployment.chunks(job["id"])}
    assert held[chunk_id][0] == "LEASED" and deployment.leaseholder_pid(held[chunk_id][1]) == victim
    final = finish(deployment, job["id"], timeout=60)
    assert final["status"] == "SUCCESS"
    assert (final["completed"], final["failed"], final["canceled"]) == (20, 0, 0)
    # Exactly once: every item was written back one time, none twice.
    assert [a for _, _, a in assert_counters_match_items(deployment, final)] == [1] * 20
    attempts = {cid: n for cid, _, _, n, _ in deployment.chunks(job["id"])}
    assert attempts[chunk_id] == 2
    with deployment.client() as client:
        logs = client.get(f"/api/v2/jobs/{job['id']}/logs/", params={"level": "WARNING", "limit": 100}).json()
    assert any(f"chunk {chunk_id} expired" in line["message"] for line in logs["results"]), logs
    # The pool replaced the dead process, so the next test has two workers again.
    wait_for(
        lambda: len(deployment.worker_pids()) == 2 and victim not in deployment.worker_pids(),
        15,
        what="a replacement worker process",
    )
    wait_for(lambda: httpx.get(f"{deployment.server.url}/readyz").status_code == 200, 15, what="readyz")


def test_concurrent_cancels_make_exactly_one_transition(deployment: Deployment) -> None:
    job = deployment.submit(100, name="concurrent", config={"item_seconds": 0.05})
    started(deployment, job["id"], 2)
    barrier = threading.Barrier(10)
    codes: list[int] = []
    lock = threading.Lock()

    def cancel() -> None:
        with deployment.client() as client:
            barrier.wait(timeout=10)
            code = client.post(f"/api/v2/jobs/{job['id']}/cancel/").status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=cancel) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(codes) == 10
    assert all(code in (200, 409) for code in codes), codes
    assert 200 in codes
    with deployment.client() as client:
        final = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
    statuses = [e["to_status"] for e in transitions(deployment, job["id"])]
    assert statuses.count("CANCELING") == 1, statuses
    assert statuses.count("REVOKED") == 1, statuses
    assert statuses[-2:] == ["CANCELING", "REVOKED"]
    assert_counters_match_items(deployment, final)


# ------------------------------------------------------------------ history


def _walk(client: httpx.Client, params: dict[str, Any]) -> tuple[list[list[int]], str | None]:
    """Follow ``next`` links from the first page; the pages' ids and the last page's ``previous``."""
    pages: list[list[int]] = []
    response = client.get("/api/v2/jobs/", params=params)
    previous: str | None = None
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([j["id"] for j in page["results"]])
        previous = page["previous"]
        if not page["next"]:
            return pages, previous
        assert "cursor" in parse_qs(urlparse(page["next"]).query)
        response = client.get(page["next"])
        assert len(pages) < 100


def _ids(client: httpx.Client, **params: Any) -> set[int]:
    response = client.get("/api/v2/jobs/", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next"] is None
    assert page["count"] == len(page["results"])
    return {j["id"] for j in page["results"]}


def test_history_filters_and_cursor_pagination(deployment: Deployment) -> None:
    # Two jobs that never run (pending group), one canceled before running, one digits job.
    deployment.submit(2, name="hist-created-a", start_now=False)
    deployment.submit(2, name="hist-created-b", start_now=False)
    revoked = deployment.submit(1, name="hist-revoked", start_now=False)
    ((png_name, png, _),) = holdout_pngs(limit=1)
    with deployment.client() as client:
        assert client.post(f"/api/v2/jobs/{revoked['id']}/cancel/").status_code == 200
        response = client.post(
            "/api/v2/jobs/",
            json={
                "name": f"{deployment.prefix}-hist-digits",
                "pipeline": "digits",
                "inputs": [{"name": png_name, "kind": "base64", "data": base64.b64encode(png).decode()}],
            },
        )
        assert response.status_code == 201, response.text
        digits_id = response.json()["id"]
    deployment.job_ids.append(digits_id)
    ours = set(deployment.job_ids)
    status = {job_id: detail(deployment, job_id)["status"] for job_id in ours}
    prefix = deployment.prefix

    with deployment.client() as client:
        assert _ids(client, search=prefix) == ours
        assert _ids(client, search=prefix.upper()) == ours  # case-insensitive
        assert _ids(client, search=f"{prefix}-hist-created") == {
            i for i in ours if i != digits_id and status[i] == "CREATED"
        }
        # Status groups and single states.
        assert _ids(client, search=prefix, status="all") == ours
        assert _ids(client, search=prefix, status="pending") == {
            i for i, s in status.items() if s not in FINISHED
        }
        assert _ids(client, search=prefix, status="pending") >= {digits_id}
        assert _ids(client, search=prefix, status="terminated") == {
            i for i, s in status.items() if s in FINISHED
        }
        for state in ("SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT", "CREATED"):
            expected = {i for i, s in status.items() if s == state}
            assert expected, f"the module made no {state} job"
            assert _ids(client, search=prefix, status=state) == expected, state
        assert _ids(client, search=prefix, status="timedout") == {
            i for i, s in status.items() if s == "TIMEDOUT"
        }
        assert _ids(client, search=prefix, status="SUCCESS,FAILURE") == {
            i for i, s in status.items() if s in ("SUCCESS", "FAILURE")
        }
        # Pipeline filter, by slug and by id.
        assert _ids(client, search=prefix, pipeline="digits") == {digits_id}
        assert _ids(client, search=prefix, pipeline="test-delay") == ours - {digits_id}
        digits_pipeline = detail(deployment, digits_id)["pipeline"]["id"]
        assert _ids(client, search=prefix, pipeline=str(digits_pipeline)) == {digits_id}
        assert _ids(client, search=prefix, pipeline="digits", status="terminated") == set()

        # Cursor pagination forward: every job once, newest first, no gaps, no duplicates.
        for ordering in ("-created_at", "name", "status"):
            params = {"search": prefix, "limit": 3, "ordering": ordering}
            pages, previous = _walk(client, params)
            flat = [i for page in pages for i in page]
            assert len(flat) == len(set(flat)) == len(ours), (ordering, pages)
            assert set(flat) == ours
            assert all(len(page) == 3 for page in pages[:-1])
            assert flat == list(_ids_in_order(client, prefix, ordering)), ordering
            # Backwards from the last page by ``previous`` links: the same pages in reverse.
            back: list[list[int]] = [pages[-1]]
            while previous:
                response = client.get(previous)
                assert response.status_code == 200, response.text
                page = response.json()
                back.append([j["id"] for j in page["results"]])
                previous = page["previous"]
                assert len(back) <= len(pages)
            assert back[::-1] == pages, ordering
        first = client.get("/api/v2/jobs/", params={"search": prefix, "limit": 3}).json()
        assert first["count"] == len(ours)
        assert first["previous"] is None


def _ids_in_order(client: httpx.Client, prefix: str, ordering: str) -> list[int]:
    response = client.get("/api/v2/jobs/", params={"search": prefix, "limit": 1000, "ordering": ordering})
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["results"]]


def test_event_stream_follows_a_job_live(deployment: Deployment) -> None:
    """SSE works alike in every mode: workers write to the shared database, the API's hub reads it."""
    from tests.sse import SseReader

    job = deployment.submit(8, name="sse", start_now=False, config={"item_seconds": 0.1})
    path = f"/api/v2/jobs/{job['id']}/events/"
    with SseReader(deployment.server.url, path, key=deployment.server.key) as reader:
        reader.wait(lambda e: e.event == "job" and e.data["status"] == "CREATED")
        with deployment.client() as client:
            assert client.post(f"/api/v2/jobs/{job['id']}/run/").status_code == 200
        last = reader.wait(lambda e: e.event == "job" and e.data["status"] in FINISHED, timeout=60)
        reader.wait(lambda e: e.event == "status" and e.data["to_status"] in FINISHED)
        events = reader.snapshot()
    assert last.data["status"] == "SUCCESS" and last.data["completed"] == 8
    statuses = [e.data["to_status"] for e in events if e.event == "status"]
    assert statuses == [t["to_status"] for t in transitions(deployment, job["id"])][1:]
    assert statuses[-1] == "SUCCESS"
    completed = [e.data["completed"] for e in events if e.event == "job"]
    assert completed == sorted(completed) and len(set(completed)) >= 2, completed
