"""The dashboard's jobs by reference: the submit form takes URLs and a manifest address (served
by a local HTTP server), and the job page shows the collect stage's progress and the items'
sources. (The workers of this branch do not read references yet: ``test-delay`` takes the
empty bytes, so the test checks the listing, not model outputs.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers import Server, start_server, wait_status
from tests.helpers.api import JOBS, unique
from tests.helpers.browser import login, snap
from tests.helpers.inputs import FileServer, serve_files

LISTED = 150


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    yield from serve_files()


@pytest.fixture(scope="module")
def ref_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that may read the loopback file server (CONVEYOR_ALLOW_PRIVATE_URLS)."""
    env = {"CONVEYOR_ALLOW_PRIVATE_URLS": "true", "CONVEYOR_CHUNK_SIZE": "50"}
    server = start_server(Path(tmp_path_factory.mktemp("browser-refs")), workers=1, extra_env=env)
    yield server
    server.stop()


def test_submit_urls_and_a_manifest_address_and_see_the_collect_stage(
    page: Any, ref_server: Server, files: FileServer
) -> None:
    direct = [files.add(f"/web/direct-{i}.jpg", b"jpg") for i in range(2)]
    listed = [files.add(f"/web/listed-{i}.jpg", b"jpg") for i in range(LISTED)]
    manifest = files.add("/web/list.txt", "\n".join(listed).encode())

    login(page, ref_server)
    page.get_by_role("link", name="Submit", exact=True).click()
    option = page.locator("#s-pipeline option", has_text="(test-delay)")
    page.get_by_label("Pipeline", exact=True).select_option(option.get_attribute("value"))
    name = unique("browser-refs")
    page.get_by_label("Name").fill(name)
    page.get_by_label("URLs or S3 addresses").fill("\n".join(direct))
    page.get_by_label("Manifest address").fill(manifest)
    page.get_by_label("Manifest format").select_option("text")
    page.get_by_label("Pipeline config (JSON)").fill('{"item_seconds": 0.01}')
    snap(page, "submit-by-reference")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[-1])

    collect = page.locator('#stages [data-stage="collect"]')
    expect(collect).to_be_visible()
    expect(collect.locator(".stage-name")).to_have_text("Collect — SUCCESS", timeout=60_000)
    expect(collect.locator(".collect-detail")).to_contain_text(f"{LISTED} entries listed from 1 source(s)")
    expect(page.locator("#job-status")).to_have_text("SUCCESS", timeout=60_000)
    counters = page.locator("#counters")
    expect(counters).to_contain_text(str(LISTED + 2))
    expect(page.locator("#output-card")).to_be_hidden()  # the job names no output
    first_rows = page.locator("#items tbody tr")
    expect(first_rows.first.locator("td.source")).to_have_text(direct[0])
    expect(first_rows.nth(2).locator("td.source")).to_have_text(listed[0])
    snap(page, "job-by-reference")

    with ref_server.client() as client:
        job = wait_status(client, job_id, {"SUCCESS"})
        assert client.get(f"{JOBS}{job_id}/").status_code == 200
    assert (job["name"], job["total"], job["completed"]) == (name, LISTED + 2, LISTED + 2)
    stage = next(s for s in job["progress"]["stages"] if s["key"] == "collect")
    assert {p["name"]: p["value"] for p in stage["params"]}["entries_listed"] == LISTED


def test_a_bad_reference_is_refused_in_the_form(page: Any, ref_server: Server) -> None:
    login(page, ref_server)
    page.goto(f"{ref_server.url}/submit")
    page.get_by_label("Name").fill(unique("browser-bad-ref"))
    page.get_by_label("URLs or S3 addresses").fill("ftp://host/a.jpg")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#flash")).to_contain_text("Not an http(s):// or s3:// address: ftp://host/a.jpg")
    assert page.url.endswith("/submit")
