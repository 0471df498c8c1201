"""Antenna's pull protocol (async_api) against real servers on both dialects, driven by a client
that speaks the ADC worker's wire exactly (tests/helpers/adc_worker.py): registration, the job
list without a trailing slash, task leases, both result shapes, lease expiry, max deliveries,
duplicates and forged reply subjects, tenancy, cancel, and local workers that never take an
async_api job's items."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import Server, start_server, wait_for, wait_status
from tests.helpers.adc_worker import AdcWorker, detections_result, error_result
from tests.helpers.api import JOBS, all_items, all_logs, b64, get_job, unique
from tests.helpers.backends import postgres_database

LEASE_SECONDS = 3.0
MAX_DELIVERIES = 2


def png(level: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (level, level, level)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with contextlib.ExitStack() as stack:
        env = {
            "CONVEYOR_PULL_LEASE_SECONDS": str(LEASE_SECONDS),
            "CONVEYOR_PULL_MAX_DELIVERIES": str(MAX_DELIVERIES),
        }
        if request.param == "postgresql":
            env["CONVEYOR_DATABASE_URL"] = stack.enter_context(postgres_database())
        # Two local workers: they must never take an async_api job's items.
        started = start_server(tmp_path_factory.mktemp(f"pull-{request.param}"), workers=2, extra_env=env)
        stack.callback(started.stop)
        yield started


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def adc(server: Server) -> Iterator[AdcWorker]:
    with AdcWorker(f"{server.url}/api/v2", server.key) as worker:
        yield worker


def project_id(client: httpx.Client) -> int:
    projects = client.get("/api/v2/projects/").json()
    return int(next(p["id"] for p in projects if p["slug"] == "default"))


def pipeline_config(slug: str, version: int = 1, name: str | None = None) -> dict[str, Any]:
    """A registration entry as the ADC sends it (PipelineConfigResponse)."""
    return {
        "name": name or f"Moths {slug}",
        "slug": slug,
        "version": version,
        "description": "Detect and classify moths",
        "algorithms": [{"name": "Detector", "key": "detector", "task_type": "localization"}],
        "stages": [],
    }


def registered(client: httpx.Client, adc: AdcWorker) -> str:
    slug = unique("moths").replace("_", "-")
    response = adc.register(project_id(client), "AMI Data Companion", [pipeline_config(slug)])
    assert response.status_code in (200, 201), response.text
    return slug


def submit_images(client: httpx.Client, slug: str, images: list[bytes], **body: Any) -> dict[str, Any]:
    response = client.post(
        f"{JOBS}?start_now=true",
        json={
            "name": unique("pull"),
            "pipeline": slug,
            "inputs": [
                {"name": f"img-{i}.png", "kind": "base64", "data": b64(d)} for i, d in enumerate(images)
            ],
            **body,
        },
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def test_registration_is_idempotent_and_updates(client: httpx.Client, adc: AdcWorker) -> None:
    pid = project_id(client)
    slug = unique("reg").replace("_", "-")
    first = adc.register(pid, "ADC reg", [pipeline_config(slug)])
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["pipelines_created"] == [slug] and body["pipelines_updated"] == []
    again = adc.register(
        pid, "ADC reg", [pipeline_config(slug, version=2, name="Renamed"), pipeline_config(f"{slug}-b")]
    )
    assert again.status_code == 201
    assert again.json()["pipelines_created"] == [f"{slug}-b"]
    assert again.json()["pipelines_updated"] == [slug]
    assert again.json()["processing_service_id"] == body["processing_service_id"]
    third = adc.register(pid, "ADC reg", [pipeline_config(slug, version=2, name="Renamed")])
    assert third.status_code == 200 and third.json()["pipelines_created"] == []
    # The job of a re-registered pipeline runs its latest version.
    job = submit_images(client, slug, [png(1)])
    assert job["pipeline"]["version"] == 2 and job["pipeline"]["name"] == "Renamed"
    # Newer ADC workers send no service name, only client_info: the hostname names the service.
    newer = adc.http.post(
        f"{adc.base_url}/projects/{pid}/pipelines/",
        json={"pipelines": [pipeline_config(slug)], "client_info": {"hostname": "gpu-box-1"}},
    )
    assert newer.status_code == 200 and newer.json()["pipelines_updated"] == [slug], newer.text
    assert newer.json()["processing_service_id"] != body["processing_service_id"]
    assert adc.register(10**6, "ADC reg", []).status_code == 404
    assert adc.register(pid, "ADC reg", [{"name": "no slug"}]).status_code == 400


def test_a_job_runs_to_success_through_the_adc_wire(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    images = [png(level) for level in range(30)]
    job = submit_images(client, slug, images)
    assert job["dispatch_mode"] == "async_api"
    assert job["pipeline"]["slug"].endswith(f"/{slug}")

    # The local workers (--workers 2) never take it: it stays queued, every item PENDING.
    with pytest.raises(AssertionError):
        wait_for(lambda: get_job(client, job["id"])["status"] != "PENDING", timeout=1.5)
    assert all(i["status"] == "PENDING" for i in all_items(client, job["id"]))

    # The job list, exactly as the worker asks for it (no trailing slash, no redirect).
    listed = adc.jobs_response([slug, "other-slug"])
    assert listed.status_code == 200, listed.text
    assert {"id": job["id"], "pipeline_slug": slug} in listed.json()["results"]
    assert set(listed.json()) >= {"count", "next", "previous", "results"}
    slashed = client.get("/api/v2/jobs/", params=dict(listed.request.url.params))
    assert slashed.json()["results"] == listed.json()["results"]

    by_name = {f"img-{i}.png": data for i, data in enumerate(images)}
    items = {str(i["id"]): i["name"] for i in all_items(client, job["id"])}

    def answer(task: dict[str, Any], data: bytes) -> dict[str, Any]:
        name = items[task["image_id"]]
        assert data == by_name[name]  # the plain, keyless GET of image_url served the item's bytes
        if name == "img-7.png":
            return error_result(task, "CUDA out of memory on img-7")
        return detections_result(task, slug, f"label-{name}")

    posted = adc.run_job(job["id"], answer)
    assert posted == 30
    done = wait_status(client, job["id"], {"SUCCESS", "FAILURE"}, timeout=30)
    assert done["status"] == "SUCCESS", done
    assert (done["completed"], done["failed"], done["pending"]) == (29, 1, 0)
    rows = {i["name"]: i for i in all_items(client, job["id"])}
    assert rows["img-7.png"]["status"] == "FAILURE" and "CUDA out of memory" in rows["img-7.png"]["error"]
    ok = rows["img-3.png"]
    assert ok["status"] == "SUCCESS"
    assert ok["result"]["labels"] == ["label-img-3.png"]
    assert ok["result"]["detections"][0]["bbox"] == {"x1": 1.0, "y1": 2.0, "x2": 10.0, "y2": 12.0}
    # Finished: no longer listed for the worker, and /tasks/ hands out nothing.
    assert job["id"] not in [j for j, _ in adc.get_jobs([slug])]
    assert adc.fetch_tasks(job["id"]) == []


def test_an_unanswered_task_is_offered_again_after_its_lease(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1), png(2), png(3)])
    first = adc.fetch_tasks(job["id"])
    assert len(first) == 3
    assert get_job(client, job["id"])["status"] == "STARTED"
    assert adc.fetch_tasks(job["id"]) == []  # all leased
    again = wait_for(lambda: adc.fetch_tasks(job["id"]), timeout=LEASE_SECONDS + 10, interval=0.3)
    assert {t["image_id"] for t in again} == {t["image_id"] for t in first}
    assert {t["reply_subject"] for t in again}.isdisjoint(t["reply_subject"] for t in first)
    # A late answer under the first delivery's subject changes nothing; the current one counts.
    late = adc.post_results(
        job["id"],
        [{"reply_subject": t["reply_subject"], "result": detections_result(t, slug, "late")} for t in first],
    )
    assert late["status"] == "accepted" and late["results_applied"] == 0
    assert get_job(client, job["id"])["completed"] == 0
    now = adc.post_results(
        job["id"],
        [{"reply_subject": t["reply_subject"], "result": detections_result(t, slug, "now")} for t in again],
    )
    assert now["results_applied"] == 3 and all(t["applied"] for t in now["tasks"])
    done = wait_status(client, job["id"], {"SUCCESS"}, timeout=15)
    assert done["completed"] == 3
    assert {i["result"]["labels"][0] for i in all_items(client, job["id"])} == {"now"}


def test_max_deliveries_fails_the_item_and_the_job_ends(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1), png(2)], max_failed_ratio=1.0)
    first = adc.fetch_tasks(job["id"])
    assert len(first) == 2
    second = wait_for(lambda: adc.fetch_tasks(job["id"]), timeout=LEASE_SECONDS + 10, interval=0.3)
    assert len(second) == 2  # delivery 2 of 2
    keep = second[0]
    adc.post_results(
        job["id"], [{"reply_subject": keep["reply_subject"], "result": detections_result(keep, slug, "x")}]
    )
    # Nobody asks again: the sweeper fails the other item once its last lease ran out.
    done = wait_status(client, job["id"], {"SUCCESS", "FAILURE"}, timeout=LEASE_SECONDS + 20)
    assert done["status"] == "SUCCESS" and (done["completed"], done["failed"]) == (1, 1)
    failed = [i for i in all_items(client, job["id"]) if i["status"] == "FAILURE"]
    assert failed[0]["error"] == f"no worker answered after {MAX_DELIVERIES} deliveries"
    assert any("no worker answered" in line["message"] for line in all_logs(client, job["id"]))


def test_duplicate_and_forged_reply_subjects_change_nothing(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1), png(2), png(3)])
    tasks = adc.fetch_tasks(job["id"])
    one = tasks[0]
    result = {"reply_subject": one["reply_subject"], "result": detections_result(one, slug, "a")}
    answer = adc.post_results(job["id"], [result, result])  # twice in one post
    assert answer["results_queued"] == 2 and answer["results_applied"] == 1
    assert adc.post_results(job["id"], [result])["results_applied"] == 0  # and again later
    other = tasks[1]
    forged = [
        {"reply_subject": f"{other['image_id']}.forged", "result": detections_result(other, slug, "f")},
        {"reply_subject": "not-a-subject", "result": error_result(other, "x")},
        {
            "reply_subject": f"{one['image_id']}.{one['reply_subject'].split('.')[1]}x",
            "result": error_result(one, "x"),
        },
    ]
    answer = adc.post_results(job["id"], forged)
    assert answer["results_applied"] == 0 and [t["status"] for t in answer["tasks"]] == ["queued"] * 3
    state = get_job(client, job["id"])
    assert (state["completed"], state["failed"], state["pending"]) == (1, 0, 2)
    rows = {str(i["id"]): i for i in all_items(client, job["id"])}
    assert rows[one["image_id"]]["result"]["labels"] == ["a"]
    assert rows[other["image_id"]]["status"] == "PENDING"


def test_another_accounts_key_gets_404_and_a_read_only_key_403(
    server: Server, client: httpx.Client, adc: AdcWorker
) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1)])
    tasks = adc.fetch_tasks(job["id"])
    stranger = server.create_key(account=unique("acct"), name=unique("stranger"))
    with AdcWorker(f"{server.url}/api/v2", stranger) as theirs:
        assert theirs.tasks_response(job["id"]).status_code == 404
        post = theirs.post_response(
            job["id"], [{"reply_subject": tasks[0]["reply_subject"], "result": error_result(tasks[0], "x")}]
        )
        assert post.status_code == 404
        assert job["id"] not in [j for j, _ in theirs.get_jobs([slug])]
        theirs_catalog = theirs.http.get(f"{server.url}/api/v2/pipelines/").json()
        assert not any(p["slug"].endswith(f"/{slug}") for p in theirs_catalog)
        assert theirs.http.get(f"{server.url}/api/v2/pipelines/{job['pipeline']['id']}/").status_code == 404
    ours = [p["slug"] for p in client.get("/api/v2/pipelines/").json()]
    assert job["pipeline"]["slug"] in ours
    reader = server.create_key(role="viewer", name=unique("reader"))
    with AdcWorker(f"{server.url}/api/v2", reader) as readonly:
        assert readonly.tasks_response(job["id"]).status_code == 403
    assert get_job(client, job["id"])["pending"] == 1


def test_cancel_answers_no_tasks_and_ignores_late_results(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1), png(2)])
    tasks = adc.fetch_tasks(job["id"], batch_size=1)
    assert client.post(f"{JOBS}{job['id']}/cancel/").status_code in (200, 202)
    done = wait_status(client, job["id"], {"REVOKED"}, timeout=10)
    assert done["canceled"] == 2
    assert adc.fetch_tasks(job["id"]) == []
    late = adc.post_results(
        job["id"],
        [{"reply_subject": tasks[0]["reply_subject"], "result": detections_result(tasks[0], slug, "late")}],
    )
    assert late["status"] == "accepted" and late["results_applied"] == 0
    assert get_job(client, job["id"])["completed"] == 0
    # Deleted: the server had the job's facts in memory, and still answers 404 from now on.
    assert client.delete(f"{JOBS}{job['id']}/").status_code == 204
    assert adc.tasks_response(job["id"]).status_code == 404
    assert adc.post_response(job["id"], [{"reply_subject": "1.x", "result": {}}]).status_code == 404


def test_a_job_of_an_installed_pipeline_is_not_served_to_pull_workers(
    client: httpx.Client, adc: AdcWorker
) -> None:
    response = client.post(
        f"{JOBS}?start_now=true",
        json={"name": unique("local"), "pipeline": "test-delay", "inputs": [{"kind": "text", "data": "x"}]},
    )
    job = response.json()
    assert job["dispatch_mode"] != "async_api"
    refused = adc.tasks_response(job["id"])
    assert refused.status_code == 400 and "async_api" in refused.text
    assert job["id"] not in [j for j, _ in adc.get_jobs(["test-delay"])]


def test_jobs_next_claims_a_job_with_work_left(client: httpx.Client, adc: AdcWorker) -> None:
    slug = registered(client, adc)
    job = submit_images(client, slug, [png(1), png(2)])
    answer = client.post("/api/v2/jobs/next/", json={"pipeline_slugs": [slug], "batch_size": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["job"] == {"id": job["id"], "pipeline_slug": slug} and len(body["tasks"]) == 2
    # Every task is held now: no job with work left.
    assert client.post("/api/v2/jobs/next/", json={"pipeline_slugs": [slug]}).json() == {
        "job": None,
        "tasks": [],
    }


def test_concurrent_pullers_get_disjoint_tasks_and_every_item_counts_once(
    server: Server, client: httpx.Client
) -> None:
    slug = registered(client, AdcWorker(f"{server.url}/api/v2", server.key))
    job = submit_images(client, slug, [png(i % 250) for i in range(240)])
    seen: list[list[str]] = [[], [], []]

    def pull(index: int) -> None:
        with AdcWorker(f"{server.url}/api/v2", server.key) as worker:
            while tasks := worker.fetch_tasks(job["id"], batch_size=7):
                seen[index].extend(t["image_id"] for t in tasks)
                worker.post_results(
                    job["id"],
                    [
                        {"reply_subject": t["reply_subject"], "result": detections_result(t, slug, "c")}
                        for t in tasks
                    ],
                )

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    delivered = [image for part in seen for image in part]
    assert len(delivered) == len(set(delivered)) == 240  # no task handed to two pullers
    done = wait_status(client, job["id"], {"SUCCESS", "FAILURE"}, timeout=30)
    assert (done["status"], done["completed"], done["failed"], done["pending"]) == ("SUCCESS", 240, 0, 0)
    assert all(i["attempts"] == 1 for i in all_items(client, job["id"]))


def test_a_worker_key_pulls_and_the_worker_shows_in_the_registry(
    client: httpx.Client, server: Server
) -> None:
    """A key of role ``worker`` runs the whole ADC wire (registration, the ids_only job list,
    tasks, results) and nothing else; the pull worker is listed by its client_info hostname with
    the job it works on and the results it posted. Before any worker is seen, the job's results
    stage says it waits for one."""
    key = server.create_key(role="worker", name=unique("adc-key"))
    slug = unique("reg").replace("_", "-")
    hostname = unique("gpu-box")
    with AdcWorker(f"{server.url}/api/v2", key) as adc:
        assert adc.register(project_id(client), "ADC", [pipeline_config(slug)]).status_code == 201
        job = submit_images(client, slug, [png(level) for level in range(5)])

        def waiting_note() -> str | None:
            stages = {s["key"]: s for s in get_job(client, job["id"])["progress"]["stages"]}
            notes = [p["value"] for p in stages["results"]["params"] if p["name"] == "message"]
            return notes[0] if notes else None

        # No pull worker of this pipeline was ever seen: the sweeper says so in the job.
        wait_for(lambda: waiting_note() is not None, timeout=15)
        assert "Waiting for a pull worker" in (waiting_note() or "") and slug in (waiting_note() or "")

        # Anything but the pull wire is refused to a worker key.
        assert adc.http.get(f"{server.url}/api/v2/jobs/").status_code == 403
        assert adc.http.get(f"{server.url}/api/v2/jobs/{job['id']}/").status_code == 403
        assert [j for j, _ in adc.get_jobs([slug])] == [job["id"]]
        response = adc.tasks_response(job["id"], 24, client_info={"hostname": hostname, "software": "adc"})
        assert response.status_code == 200, response.text
        tasks = response.json()["tasks"]
        assert len(tasks) == 5
        answer = adc.post_results(
            job["id"],
            [
                {"reply_subject": t["reply_subject"], "result": detections_result(t, slug, "moth")}
                for t in tasks
            ],
        )
        assert answer["results_applied"] == 5
        done = wait_status(client, job["id"], {"SUCCESS", "FAILURE"}, timeout=30)
        assert done["status"] == "SUCCESS" and done["completed"] == 5

    def pull_rows() -> list[dict[str, Any]]:
        listed = client.get("/api/v2/workers/", params={"kind": "pull"})
        assert listed.status_code == 200, listed.text
        return [w for w in listed.json() if w["name"] == hostname]

    # The registry throttles its writes; the sweeper writes the last results' count within a period.
    wait_for(lambda: [r["items_done"] for r in pull_rows()] == [5], timeout=10)
    row = pull_rows()[0]
    assert slug in row["pipelines"]
    assert row["info"].get("software") == "adc"
    # A worker was seen: the note is gone once the job has ended (it is cleared or never rewritten).
    stages = {s["key"]: s for s in get_job(client, job["id"])["progress"]["stages"]}
    assert stages["results"]["status"] == "SUCCESS"
