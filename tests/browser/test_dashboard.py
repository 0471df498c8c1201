"""The dashboard in a real browser: login, submit, live progress, cancel, history, viewer."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.helpers import Server, wait_status
from tests.helpers.api import JOBS, submit, unique
from tests.helpers.browser import login, snap


def test_login_submit_and_watch_the_progress_bar_reach_100_live(page: Any, web_server: Server) -> None:
    login(page, web_server)
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.get_by_role("link", name="Submit", exact=True).click()
    option = page.locator("#s-pipeline option", has_text="(test-delay)")
    page.get_by_label("Pipeline", exact=True).select_option(option.get_attribute("value"))
    expect(page.locator("#pipeline-info")).to_contain_text("accepts text, base64")
    name = unique("browser-submit")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Texts (one input per line)").fill("\n".join(f"line {i}" for i in range(8)))
    page.get_by_label("Pipeline config (JSON)").fill('{"item_seconds": 0.4}')
    snap(page, "submit")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_url = page.url
    page.evaluate("window.__notReloaded = true")

    overall = page.get_by_role("progressbar", name="Overall progress")
    seen: set[int] = set()
    for _ in range(400):
        seen.add(int(overall.get_attribute("aria-valuenow") or 0))
        if 100 in seen:
            break
        page.wait_for_timeout(50)
    assert 100 in seen, seen
    assert any(0 < v < 100 for v in seen), f"no intermediate progress seen live: {sorted(seen)}"
    assert page.evaluate("window.__notReloaded") is True and page.url == job_url  # no reload
    expect(page.locator("#job-status")).to_have_text("SUCCESS")
    expect(page.get_by_role("log")).to_contain_text("Finished job")
    expect(page.locator("#items tbody tr")).to_have_count(8)
    expect(page.locator("#counters")).to_contain_text("completed")
    snap(page, "job")


def test_cancel_a_running_job_from_its_page(page: Any, web_server: Server) -> None:
    with web_server.client() as client:
        job = submit(client, name=unique("browser-cancel"), n=30, config={"item_seconds": 0.5})
        wait_status(client, job["id"], {"STARTED"})
    login(page, web_server)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text("STARTED")
    expect(page.get_by_role("button", name="Run")).to_be_disabled()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("REVOKED")
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    expect(page.get_by_role("button", name="Delete")).to_be_enabled()
    with web_server.client() as client:
        assert client.get(f"{JOBS}{job['id']}/").json()["status"] == "REVOKED"


def test_filter_sort_and_page_the_history(page: Any, web_server: Server) -> None:
    tag = unique("browser-history")
    with web_server.client() as client:
        ids = [submit(client, name=f"{tag}-{i}", n=1, start_now=False)["id"] for i in range(7)]
        for job_id in ids[:3]:
            assert client.post(f"{JOBS}{job_id}/cancel/").status_code == 200
    login(page, web_server)
    page.get_by_label("Name contains").fill(tag)
    page.get_by_label("Per page").select_option("5")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#count")).to_have_text("7 jobs")
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.first).to_have_attribute("data-job", str(ids[-1]))  # newest first
    snap(page, "jobs")
    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(2)
    expect(rows.last).to_have_attribute("data-job", str(ids[0]))
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(5)
    page.get_by_role("button", name="#").click()  # sort by id
    expect(rows.first).to_have_attribute("data-job", str(ids[-1]))
    page.get_by_role("button", name="#").click()
    expect(rows.first).to_have_attribute("data-job", str(ids[0]))
    page.get_by_label("Status").select_option("REVOKED")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#count")).to_have_text("3 jobs")
    expect(rows).to_have_count(3)


def test_visible_rows_update_live(page: Any, web_server: Server) -> None:
    tag = unique("browser-live")
    with web_server.client() as client:
        job = submit(client, name=tag, n=4, start_now=False, config={"item_seconds": 0.2})
    login(page, web_server)
    page.get_by_label("Name contains").fill(tag)
    page.get_by_role("button", name="Apply").click()
    row = page.locator(f'#jobs tbody tr[data-job="{job["id"]}"]')
    expect(row.locator(".status")).to_have_text("CREATED")
    with web_server.client() as client:
        assert client.post(f"{JOBS}{job['id']}/run/").status_code == 200
    expect(row.locator(".status")).to_have_text("SUCCESS")
    expect(row.locator(".counts")).to_have_text("4 / 0 / 4")


def test_a_viewer_key_gets_no_action_buttons(page: Any, web_server: Server) -> None:
    viewer = web_server.create_key(role="viewer", name="browser-viewer")
    with web_server.client() as client:
        job = submit(client, name=unique("browser-viewer"), n=1, start_now=False)
    login(page, web_server, viewer)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text("CREATED")
    expect(page.locator("#fields")).to_contain_text("Submitted by")
    expect(page.locator("#job-actions button")).to_have_count(0)
    # The owner sees them on the same page.
    login(page, web_server)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    expect(page.get_by_role("button", name="Run")).to_be_enabled()
    page.goto(f"{web_server.url}/pipelines")
    expect(page.locator("#pipelines tbody tr").first).to_be_visible()
    snap(page, "pipelines")
