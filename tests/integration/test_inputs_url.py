"""URL inputs with `fetch: at_submit` against a real server: fetched during the request from a
local HTTP server the test starts.

The capped server allows private addresses (CONVEYOR_ALLOW_PRIVATE_URLS=true) so that it can
reach the test's server on 127.0.0.1; the shared server keeps the default and must refuse it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server
from tests.helpers.api import JOBS, all_items, assert_error, count_named, finished, unique
from tests.helpers.inputs import (
    INPUT_CAP,
    FileServer,
    module_fixture,
    serve_files,
    serve_inputs,
)

inputs_server = module_fixture(serve_inputs)
files = module_fixture(serve_files)


@pytest.fixture
def client(inputs_server: Server) -> Iterator[httpx.Client]:
    with inputs_server.client() as c:
        yield c


def post(
    client: httpx.Client, name: str, inputs: list[dict[str, Any]], pipeline: str = "digits"
) -> httpx.Response:
    """Submit with ``fetch: at_submit``: this module tests the strict path, where every input is
    read during the request (inputs by reference: tests/integration/test_inputs_by_reference.py)."""
    body = {"name": name, "pipeline": pipeline, "inputs": inputs, "fetch": "at_submit"}
    return client.post(JOBS + "?start_now=true", json=body)


def test_url_inputs_are_fetched_and_classified(client: httpx.Client, files: FileServer) -> None:
    pngs = holdout_pngs(limit=4)
    urls = [files.add(f"/digits/{file_name}", data) for file_name, data, _ in pngs]
    moved = files.redirect("/moved/first.png", urls[0])  # a redirect is followed
    name = unique("url")
    inputs = [{"kind": "url", "data": u} for u in urls] + [{"kind": "url", "data": moved, "name": "again"}]
    response = post(client, name, inputs)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["input_byte_amount"] == sum(len(d) for _, d, _ in pngs) + len(pngs[0][1])
    assert finished(client, job["id"])["status"] == "SUCCESS"
    items = all_items(client, job["id"])
    assert [i["name"] for i in items] == [n for n, _, _ in pngs] + ["again"]
    labels = [label for _, _, label in pngs] + [pngs[0][2]]
    assert sum(i["result"]["label"] == want for i, want in zip(items, labels, strict=True)) >= 4


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        (lambda f: f.base + "/missing.png", 400, "input_unavailable"),
        (lambda f: f.add("/error.png", b"boom", status=500), 400, "input_unavailable"),
        (lambda f: f.add("/big.png", b"x" * (INPUT_CAP + 1)), 413, "too_large"),
        # No Content-Length (the body ends when the connection closes): the cap is on the bytes read.
        (
            lambda f: f.add("/big-unsized.png", b"x" * (INPUT_CAP * 3), headers={"Content-Length": ""}),
            413,
            "too_large",
        ),
        (lambda f: f.add("/slow.png", b"x" * 20, drip=0.1), 400, "input_unavailable"),  # 2 s > 1.5 s
        (lambda f: f.redirect("/loop", "/loop"), 400, "input_unavailable"),
        (lambda f: "ftp://example.org/a.png", 400, "invalid_input"),
        (lambda f: "http://user:pw@127.0.0.1/a.png", 400, "invalid_input"),
        (lambda f: "http://no-such-host.invalid/a.png", 400, "input_unavailable"),
        (lambda f: "not a url", 400, "invalid_input"),
    ],
    ids=[
        "404",
        "500",
        "over-cap",
        "over-cap-no-length",
        "too-slow",
        "redirect-loop",
        "ftp",
        "credentials",
        "unresolvable",
        "garbage",
    ],
)
def test_bad_url_is_a_clear_4xx_naming_the_input_and_nothing_is_stored(
    client: httpx.Client, files: FileServer, setup: Any, status: int, code: str
) -> None:
    address = setup(files)
    name = unique("bad-url")
    good = files.add(f"/good-{name}.png", holdout_pngs(limit=1)[0][1])
    response = post(
        client, name, [{"kind": "url", "data": good}, {"kind": "url", "data": address, "name": "bad"}]
    )
    error = assert_error(response, status)
    assert error["error"] == code, error
    assert "'bad'" in error["message"], error
    assert count_named(client, name) == 0


def test_default_server_refuses_private_addresses(shared_server: Server, files: FileServer) -> None:
    target = files.add("/private.png", holdout_pngs(limit=1)[0][1])
    hits = len(files.hits)
    name = unique("private")
    with shared_server.client() as client:
        for address in [
            target,
            target.replace("127.0.0.1", "localhost"),
            "http://10.0.0.1/a.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/a.png",
            "http://0.0.0.0/a.png",
        ]:
            error = assert_error(post(client, name, [{"kind": "url", "data": address, "name": "p"}]), 400)
            assert error["error"] == "address_not_allowed", error
            assert "CONVEYOR_ALLOW_PRIVATE_URLS" in error["message"]
        assert count_named(client, name) == 0
    assert len(files.hits) == hits  # never even connected


def test_url_inputs_are_fetched_several_at_a_time_in_order(client: httpx.Client) -> None:
    slow = FileServer()  # its own server, so that other tests' requests do not count
    try:
        urls = [slow.add(f"/slow-{i}.txt", f"body {i}".encode(), drip=0.05) for i in range(6)]
        inputs = [{"kind": "text", "data": "inline first"}] + [{"kind": "url", "data": u} for u in urls]
        response = post(client, unique("parallel"), inputs, pipeline="test-delay")
        assert response.status_code == 201, response.text
        items = all_items(client, response.json()["id"])
        assert [i["name"] for i in items] == ["input-0"] + [f"slow-{i}.txt" for i in range(6)]
        assert [i["byte_size"] for i in items] == [12] + [len(f"body {i}") for i in range(6)]
        assert slow.most_in_flight > 1, "URL inputs were fetched one after the other"
    finally:
        slow.close()
