"""File uploads (``POST /api/v2/jobs/upload/``) against a real server with small caps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.client import ConveyorClient
from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server, run_cli
from tests.helpers.api import all_items, assert_error, count_named, finished, unique
from tests.helpers.inputs import (
    INPUT_CAP,
    REQUEST_CAP,
    module_fixture,
    serve_inputs,
    staged_leftovers,
)

inputs_server = module_fixture(serve_inputs)


@pytest.fixture
def client(inputs_server: Server) -> Iterator[httpx.Client]:
    with inputs_server.client() as c:
        yield c


UPLOAD = "/api/v2/jobs/upload/"


def upload(
    client: httpx.Client, job: dict[str, Any], files: list[tuple[str, bytes]], start_now: bool = True
) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(
        UPLOAD, params={"start_now": str(start_now).lower()}, data={"job": json.dumps(job)}, files=parts
    )


def test_upload_real_images_runs_the_pipeline(client: httpx.Client, inputs_server: Server) -> None:
    pngs = holdout_pngs(limit=6)
    name = unique("upload")
    response = upload(client, {"name": name, "pipeline": "digits"}, [(n, data) for n, data, _ in pngs])
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["total"] == 6
    assert job["input_byte_amount"] == sum(len(data) for _, data, _ in pngs)
    done = finished(client, job["id"])
    assert done["status"] == "SUCCESS", done
    items = all_items(client, job["id"])
    assert [i["name"] for i in items] == [n for n, _, _ in pngs]
    assert [i["byte_size"] for i in items] == [len(data) for _, data, _ in pngs]
    assert [i["kind"] for i in items] == ["base64"] * 6
    right = sum(i["result"]["label"] == label for i, (_, _, label) in zip(items, pngs, strict=True))
    assert right >= 5, items  # the real classifier on real held-out digits
    assert staged_leftovers(inputs_server) == []


def test_inline_inputs_come_before_files_and_text_files_reach_text_pipelines(client: httpx.Client) -> None:
    name = unique("mixed")
    job = {
        "name": name,
        "pipeline": "test-delay",
        "inputs": [{"name": "inline", "kind": "text", "data": "x"}],
    }
    response = upload(client, job, [("notes.txt", "héllo".encode()), ("blob.bin", b"\xff\x00\xfe")])
    assert response.status_code == 201, response.text
    assert finished(client, response.json()["id"])["status"] == "SUCCESS"
    items = all_items(client, response.json()["id"])
    assert [(i["name"], i["kind"], i["byte_size"]) for i in items] == [
        ("inline", "text", 1),
        ("notes.txt", "base64", 6),
        ("blob.bin", "base64", 3),
    ]


def test_file_names_are_only_names(client: httpx.Client, inputs_server: Server) -> None:
    name = unique("names")
    hostile = ["../../../../tmp/evil.txt", "..\\..\\windows\\win.ini", "..", "sub/dir/ok.txt"]
    response = upload(client, {"name": name, "pipeline": "test-delay"}, [(n, b"data") for n in hostile])
    assert response.status_code == 201, response.text
    items = all_items(client, response.json()["id"])
    assert [i["name"] for i in items] == ["evil.txt", "win.ini", "upload-2", "ok.txt"]
    assert not (inputs_server.data_dir.parent / "evil.txt").exists()
    assert staged_leftovers(inputs_server) == []


def test_file_over_the_input_cap_is_413_and_nothing_is_stored(
    client: httpx.Client, inputs_server: Server
) -> None:
    name = unique("big-file")
    files = [("ok.bin", b"a" * 100), ("big.bin", b"b" * (INPUT_CAP + 1))]
    error = assert_error(upload(client, {"name": name, "pipeline": "test-delay"}, files), 413)
    assert "big.bin" in error["message"]
    assert count_named(client, name) == 0
    assert staged_leftovers(inputs_server) == []
    exact = [("exact.bin", b"c" * INPUT_CAP)]  # the cap is inclusive
    assert upload(client, {"name": name, "pipeline": "test-delay"}, exact).status_code == 201


def test_files_over_the_job_cap_are_413(client: httpx.Client, inputs_server: Server) -> None:
    name = unique("big-job")
    files = [(f"f{i}.bin", b"x" * 1900) for i in range(3)]  # 5700 > 5000 bytes per job
    assert_error(upload(client, {"name": name, "pipeline": "test-delay"}, files), 413)
    assert count_named(client, name) == 0
    assert staged_leftovers(inputs_server) == []


def test_chunked_body_over_the_request_cap_is_413(client: httpx.Client, inputs_server: Server) -> None:
    """Without a Content-Length the body cap is enforced while streaming."""
    name = unique("chunked")
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="job"\r\n\r\n'
            f"{json.dumps({'name': name, 'pipeline': 'test-delay'})}\r\n"
        ).encode()
        for index in range(REQUEST_CAP // 1000 + 2):
            yield (
                (
                    f"--{boundary}\r\nContent-Disposition: form-data; "
                    f'name="files"; filename="f{index}"\r\n\r\n'
                ).encode()
                + b"z" * 1000
                + b"\r\n"
            )
        yield f"--{boundary}--\r\n".encode()

    response = client.post(
        UPLOAD,
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413)
    assert count_named(client, name) == 0
    assert staged_leftovers(inputs_server) == []


def test_bad_upload_requests_are_clear_errors(client: httpx.Client, inputs_server: Server) -> None:
    name = unique("bad-upload")
    # No `job` field, a `job` that is not JSON, a job JSON that fails validation, not multipart.
    assert_error(client.post(UPLOAD, files=[("files", ("a", b"a"))]), 400)
    assert_error(client.post(UPLOAD, data={"job": "{nope"}, files=[("files", ("a", b"a"))]), 400)
    invalid = assert_error(
        upload(client, {"name": name, "pipeline": "test-delay", "colour": 1}, [("a", b"a")]), 422
    )
    assert "colour" in invalid["message"]
    assert_error(client.post(UPLOAD, json={"name": name}), 400)
    # An unknown pipeline is refused after the body is read; the staged files still go.
    refused = upload(client, {"name": name, "pipeline": "nope"}, [("a.png", b"a")])
    assert_error(refused, 400)
    assert count_named(client, name) == 0
    assert staged_leftovers(inputs_server) == []
    unauthenticated = httpx.post(
        inputs_server.url + UPLOAD, data={"job": json.dumps({"name": name})}, files=[("f", ("a", b"a"))]
    )
    assert_error(unauthenticated, 401)


def test_python_client_and_cli_upload_files(inputs_server: Server, tmp_path: Any) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    for file_name, data, _ in holdout_pngs(limit=3):
        (folder / file_name).write_bytes(data)
    with ConveyorClient(inputs_server.url, inputs_server.key) as conveyor:
        job = conveyor.upload("digits", sorted(folder.iterdir()), name=unique("client-upload"))
        done = conveyor.wait(job["id"])
        assert done["status"] == "SUCCESS" and done["total"] == 3
        assert [i["name"] for i in conveyor.iter_items(job["id"])] == sorted(p.name for p in folder.iterdir())
    cli = run_cli(["submit", "digits", str(folder), "--json"], inputs_server.env)
    assert cli.returncode == 0, cli.stderr
    final = json.loads(cli.stdout)
    assert final["status"] == "SUCCESS" and final["total"] == 3
