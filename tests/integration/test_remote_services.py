"""Remote processing services (Antenna's protocol) against a real test service on a local port:
registration over HTTP and CLI, remote:<service>/<slug> jobs with batching, signed image URLs,
retries, timeouts, an unreachable service, per-item errors, removal and tenancy."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import Server, free_port, run_cli, start_server
from tests.helpers.api import (
    JOBS,
    all_items,
    all_logs,
    assert_error,
    b64,
    finished,
    get_job,
    submit,
    unique,
)
from tests.processing_service import ProcessingService

SERVICES = "/api/v2/processing-services/"


def png(level: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (level, level, level)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service() -> Iterator[ProcessingService]:
    started = ProcessingService().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("remote"),
        extra_env={
            "CONVEYOR_REMOTE_RETRIES": "2",
            "CONVEYOR_REMOTE_BACKOFF_SECONDS": "0.05",
            "CONVEYOR_REMOTE_READ_TIMEOUT_SECONDS": "1",
            "CONVEYOR_REMOTE_CONNECT_TIMEOUT_SECONDS": "1",
        },
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def registered(server: Server, service: ProcessingService) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(SERVICES, json={"endpoint_url": service.url, "name": unique("bright")})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def image_inputs(bright: int, dark: int, corrupt: int = 0) -> list[dict[str, str]]:
    inputs = [{"name": f"bright-{i}.png", "kind": "base64", "data": b64(png(230))} for i in range(bright)]
    inputs += [{"name": f"dark-{i}.png", "kind": "base64", "data": b64(png(20))} for i in range(dark)]
    inputs += [
        {"name": f"corrupt-{i}.png", "kind": "base64", "data": b64(b"not an image")} for i in range(corrupt)
    ]
    return inputs


def run_remote(client: httpx.Client, slug: str, inputs: list[dict[str, str]], **body: Any) -> dict[str, Any]:
    job = submit(client, name=unique("remote"), pipeline=slug, inputs=inputs, **body)
    return finished(client, job["id"], timeout=90)


def test_registration_lists_the_services_pipelines_and_health(
    server: Server, registered: dict[str, Any]
) -> None:
    name = registered["name"]
    slugs = {p["slug"] for p in registered["pipelines"]}
    assert slugs == {f"remote:{name}/brightness", f"remote:{name}/flaky", f"remote:{name}/slow"}
    assert registered["live"] is True and registered["ready"] is True and registered["last_error"] is None
    assert registered["description"] == "Classifies images as bright or dark."
    with server.client() as client:
        catalog = {p["slug"]: p for p in client.get("/api/v2/pipelines/").json()}
        listed = client.get(SERVICES).json()
        one = client.get(f"{SERVICES}{registered['id']}/").json()
    brightness = catalog[f"remote:{name}/brightness"]
    assert brightness["version"] == 2 and brightness["input_kinds"] == ["base64"]
    assert [s["key"] for s in brightness["stages"]] == ["classify"]
    assert "test-delay" in catalog  # the installed pipelines are still there
    assert [s["id"] for s in listed if s["name"] == name] == [registered["id"]]
    assert one["endpoint_url"] == registered["endpoint_url"]


def test_a_remote_job_classifies_real_images_in_batches(
    server: Server, service: ProcessingService, registered: dict[str, Any]
) -> None:
    slug = f"remote:{registered['name']}/brightness"
    calls_before = len(service.images_per_call)
    with server.client() as client:
        job = run_remote(client, slug, image_inputs(bright=5, dark=4), config={"batch_size": 3})
        items = all_items(client, job["id"])
        sample = client.get(f"{JOBS}{job['id']}/items/{items[0]['id']}/sample")
        logs = " ".join(line["message"] for line in all_logs(client, job["id"]))
    assert job["status"] == "SUCCESS", job
    labels = {i["name"]: i["result"]["labels"] for i in items}
    assert all(labels[f"bright-{i}.png"] == ["bright"] for i in range(5)), labels
    assert all(labels[f"dark-{i}.png"] == ["dark"] for i in range(4)), labels
    detection = items[0]["result"]["detections"][0]
    assert detection["source_image_id"] == str(items[0]["id"]) and detection["bbox"]["x2"] == 24
    # Batches of at most 3 images per /process call; the service fetched every image by its URL.
    sent = service.images_per_call[calls_before:]
    assert sum(sent) == 9 and max(sent) <= 3 and len(sent) >= 3, sent
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/jpeg"
    assert service.url in logs and "runs " + slug in logs


def test_signed_image_urls_serve_the_bytes_and_nothing_else(
    server: Server, service: ProcessingService, registered: dict[str, Any]
) -> None:
    with server.client() as client:
        job = run_remote(client, f"remote:{registered['name']}/brightness", image_inputs(bright=1, dark=0))
        item_id = all_items(client, job["id"])[0]["id"]
    url = next(u for u in reversed(service.fetched_urls) if f"/media/items/{item_id}?" in u)
    assert url.startswith(server.url)  # the embedded server told its workers its own address
    good = httpx.get(url)
    assert (
        good.status_code == 200 and good.content == png(230) and good.headers["content-type"] == "image/png"
    )
    signature = re.search(r"signature=(\w+)", url)
    assert signature is not None
    tampered = url.replace(signature.group(1), "0" * len(signature.group(1)))
    other_item = url.replace(f"/items/{item_id}?", f"/items/{item_id + 1}?")
    expired = re.sub(r"expires=\d+", "expires=1000", url)
    for bad in (tampered, other_item, expired, url.split("?")[0] + "?expires=1&signature=x"):
        response = httpx.get(bad)
        assert_error(response, 404)
        assert response.content != png(230)


def test_one_corrupt_image_fails_alone_and_the_job_goes_on(
    server: Server, registered: dict[str, Any]
) -> None:
    with server.client() as client:
        job = run_remote(
            client,
            f"remote:{registered['name']}/brightness",
            image_inputs(bright=2, dark=1, corrupt=1),
            config={"batch_size": 4},
        )
        items = {i["name"]: i for i in all_items(client, job["id"])}
        logs = " ".join(line["message"] for line in all_logs(client, job["id"]))
    assert job["status"] == "SUCCESS", job  # 1 of 4 failed: under the default max_failed_ratio
    assert items["corrupt-0.png"]["status"] == "FAILURE"
    assert (
        "cannot identify image" in items["corrupt-0.png"]["error"]
        and "422" in items["corrupt-0.png"]["error"]
    )
    assert [items[n]["status"] for n in ("bright-0.png", "bright-1.png", "dark-0.png")] == ["SUCCESS"] * 3
    assert items["dark-0.png"]["result"]["labels"] == ["dark"]
    assert "one by one" in logs


def test_a_service_that_answers_503_is_retried_with_backoff(
    server: Server, service: ProcessingService, registered: dict[str, Any]
) -> None:
    service.failures_left = 2  # two 503s, then it works: within the server's 2 retries
    with server.client() as client:
        job = run_remote(client, f"remote:{registered['name']}/flaky", image_inputs(bright=1, dark=1))
        items = all_items(client, job["id"])
        logs = " ".join(line["message"] for line in all_logs(client, job["id"]))
    assert job["status"] == "SUCCESS", job
    assert sorted(tuple(i["result"]["labels"]) for i in items) == [("bright",), ("dark",)]
    assert "retry 1 of 2" in logs and "retry 2 of 2" in logs and "503" in logs
    assert service.failures_left == 0


def test_a_slow_service_times_out_and_its_items_fail_with_the_reason(
    server: Server, registered: dict[str, Any]
) -> None:
    with server.client() as client:
        job = run_remote(
            client,
            f"remote:{registered['name']}/slow",
            image_inputs(bright=2, dark=0),
            config={"sleep": 1.5},
            max_failed_ratio=1.0,
        )
        items = all_items(client, job["id"])
    assert all(i["status"] == "FAILURE" for i in items), items
    assert all("timed out" in i["error"] and "gave up after 3 attempts" in i["error"] for i in items), items


def test_an_unreachable_service_fails_its_items_clearly_and_shows_down(server: Server) -> None:
    doomed = ProcessingService().start()
    with server.client() as client:
        created = client.post(SERVICES, json={"endpoint_url": doomed.url, "name": unique("doomed")})
        assert created.status_code == 201, created.text
        doomed.stop()
        job = run_remote(
            client, f"remote:{created.json()['name']}/brightness", image_inputs(bright=2, dark=0)
        )
        items = all_items(client, job["id"])
        checked = client.post(f"{SERVICES}{created.json()['id']}/refresh/")
    assert job["status"] == "FAILURE", job
    assert all(
        "could not be reached" in i["error"] and "gave up after 3 attempts" in i["error"] for i in items
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["live"] is False and "could not be reached" in checked.json()["last_error"]


def test_bad_registrations_are_clear_4xx_and_store_nothing(
    server: Server, registered: dict[str, Any], service: ProcessingService
) -> None:
    member = server.create_key(role="member")
    with server.client() as client:
        before = len(client.get(SERVICES).json())
        assert_error(client.post(SERVICES, json={"endpoint_url": "ftp://example.org/x"}), 400)
        assert_error(client.post(SERVICES, json={"endpoint_url": service.url + "?a=b"}), 400)
        unreachable = client.post(SERVICES, json={"endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
        assert assert_error(unreachable, 400)["error"] == "input_unavailable"
        not_a_service = client.post(SERVICES, json={"endpoint_url": server.url + "/api/v2"})
        assert "info" in assert_error(not_a_service, 400)["message"]
        assert_error(client.post(SERVICES, json={"endpoint_url": service.url, "name": "Bad Name!"}), 400)
        taken = client.post(SERVICES, json={"endpoint_url": service.url, "name": registered["name"]})
        assert assert_error(taken, 409)["message"].startswith("A processing service named")
        assert_error(client.post(SERVICES, json={"endpoint_url": service.url, "extra": 1}), 422)
        assert len(client.get(SERVICES).json()) == before
    with server.client(member) as client:
        assert_error(client.post(SERVICES, json={"endpoint_url": service.url, "name": unique("m")}), 403)
        assert_error(client.delete(f"{SERVICES}{registered['id']}/"), 403)
        assert client.get(SERVICES).status_code == 200  # members see the account's services


def test_unknown_remote_pipelines_are_refused_at_submission(
    server: Server, registered: dict[str, Any]
) -> None:
    inputs = image_inputs(bright=1, dark=0)
    with server.client() as client:
        for slug, words in (
            ("remote:nosuch/brightness", "no processing service named 'nosuch'"),
            (f"remote:{registered['name']}/nosuch", "offers: brightness, flaky, slow"),
            ("remote:missing-slash", "remote:<service>/<pipeline>"),
        ):
            response = client.post(JOBS, json={"name": unique("x"), "pipeline": slug, "inputs": inputs})
            assert words in assert_error(response, 400)["message"]
        text = client.post(
            JOBS,
            json={
                "name": unique("x"),
                "pipeline": f"remote:{registered['name']}/brightness",
                "inputs": [{"name": "t", "kind": "text", "data": "hello"}],
            },
        )
        assert "accepts inputs of kind base64" in assert_error(text, 400)["message"]


def test_cli_adds_lists_checks_and_removes_a_service(server: Server, service: ProcessingService) -> None:
    name = unique("cli")
    added = run_cli(["services", "add", service.url, "--name", name], server.env)
    assert added.returncode == 0, added.stderr
    assert f"remote:{name}/brightness" in added.stdout and "ready" in added.stdout
    listed = run_cli(["services", "list"], {**server.env, "COLUMNS": "300"})
    assert listed.returncode == 0 and name in listed.stdout and service.url in listed.stdout
    checked = run_cli(["services", "check", name, "--json"], server.env)
    assert checked.returncode == 0, checked.stderr
    assert '"ready": true' in checked.stdout
    with server.client() as client:
        job = run_remote(client, f"remote:{name}/brightness", image_inputs(bright=1, dark=0))
    removed = run_cli(["services", "remove", name], server.env)
    assert removed.returncode == 0, removed.stderr
    again = run_cli(["services", "remove", name], server.env)
    assert again.returncode == 1 and "no processing service" in again.stderr
    with server.client() as client:
        refused = client.post(
            JOBS,
            json={"name": unique("x"), "pipeline": f"remote:{name}/brightness", "inputs": image_inputs(1, 0)},
        )
        assert_error(refused, 400)
        # The finished job still shows its pipeline and results.
        kept = get_job(client, job["id"])
        assert kept["status"] == "SUCCESS" and kept["pipeline"]["slug"] == f"remote:{name}/brightness"
        assert f"remote:{name}/brightness" not in {p["slug"] for p in client.get("/api/v2/pipelines/").json()}


def test_another_account_sees_and_runs_none_of_them(
    server: Server, registered: dict[str, Any], tmp_path: Path
) -> None:
    other = server.create_key(name="other", account=unique("acct"))
    slug = f"remote:{registered['name']}/brightness"
    with server.client(other) as client:
        assert client.get(SERVICES).json() == []
        assert_error(client.get(f"{SERVICES}{registered['id']}/"), 404)
        assert_error(client.post(f"{SERVICES}{registered['id']}/refresh/"), 404)
        assert_error(client.delete(f"{SERVICES}{registered['id']}/"), 404)
        assert slug not in {p["slug"] for p in client.get("/api/v2/pipelines/").json()}
        refused = client.post(
            JOBS, json={"name": unique("x"), "pipeline": slug, "inputs": image_inputs(1, 0)}
        )
        assert_error(refused, 400)
    with server.client() as client:
        pipeline_id = next(p["id"] for p in client.get("/api/v2/pipelines/").json() if p["slug"] == slug)
    with server.client(other) as client:
        assert_error(client.get(f"/api/v2/pipelines/{pipeline_id}/"), 404)
        by_id = client.post(
            JOBS, json={"name": unique("x"), "pipeline_id": pipeline_id, "inputs": image_inputs(1, 0)}
        )
        assert_error(by_id, 400)


def _closed_port() -> int:
    return free_port()  # nothing listens there
