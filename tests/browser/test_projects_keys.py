"""The header's project switcher, the API keys page (owner keys) and what viewer keys are not offered."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.helpers import Server
from tests.helpers.api import JOBS, submit, unique
from tests.helpers.browser import login, snap


def test_project_switcher_filters_the_jobs_and_preselects_the_submit_project(
    page: Any, web_server: Server
) -> None:
    tag = unique("browser-projects")
    slug = tag.lower()
    with web_server.client() as client:
        created = client.post("/api/v2/projects/", json={"slug": slug, "name": f"Project {tag}"})
        assert created.status_code == 201, created.text
        project_id = created.json()["id"]
        in_default = submit(client, name=f"{tag}-default", n=1, start_now=False)
        in_project = submit(client, name=f"{tag}-other", n=1, start_now=False, project_id=project_id)
    login(page, web_server)
    page.get_by_label("Name contains").fill(tag)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#count")).to_have_text("2 jobs")
    page.get_by_label("Current project").select_option(str(project_id))
    expect(page.locator("#count")).to_have_text("1 job")
    expect(page.locator("#jobs tbody tr")).to_have_attribute("data-job", str(in_project["id"]))
    # Remembered for the tab's session: another page and a reload keep it.
    page.get_by_role("link", name="Submit", exact=True).click()
    expect(page.get_by_label("Current project")).to_have_value(str(project_id))
    expect(page.get_by_label("Project", exact=True)).to_have_value(str(project_id))
    page.reload()
    expect(page.get_by_label("Project", exact=True)).to_have_value(str(project_id))
    page.goto(f"{web_server.url}/")
    page.get_by_label("Name contains").fill(tag)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#count")).to_have_text("1 job")
    page.get_by_label("Current project").select_option("")
    expect(page.locator("#count")).to_have_text("2 jobs")
    expect(page.locator(f'#jobs tbody tr[data-job="{in_default["id"]}"]')).to_be_visible()


def test_submit_goes_to_the_preselected_project(page: Any, web_server: Server) -> None:
    tag = unique("browser-preselect")
    with web_server.client() as client:
        created = client.post("/api/v2/projects/", json={"slug": tag.lower()})
        assert created.status_code == 201, created.text
        project_id = created.json()["id"]
    login(page, web_server)
    page.get_by_label("Current project").select_option(str(project_id))
    page.get_by_role("link", name="Submit", exact=True).click()
    expect(page.get_by_label("Project", exact=True)).to_have_value(str(project_id))
    option = page.locator("#s-pipeline option", has_text="(test-delay)")
    page.get_by_label("Pipeline", exact=True).select_option(option.get_attribute("value"))
    page.get_by_label("Name", exact=True).fill(tag)
    page.get_by_label("Texts (one input per line)").fill("one")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = page.url.rsplit("/", 1)[1]
    with web_server.client() as client:
        assert client.get(f"{JOBS}{job_id}/").json()["project"]["id"] == project_id


def test_an_owner_creates_and_revokes_a_key(page: Any, web_server: Server) -> None:
    name = unique("browser-key")
    login(page, web_server)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Role").select_option("viewer")
    page.get_by_label("Expires in days (empty: never)").fill("30")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New key")
    expect(secret).to_have_value(re.compile(r"^[^.]+\..+"))
    expect(page.locator("#new-key")).to_contain_text("shown only once")
    token = secret.input_value()
    prefix = token.split(".", 1)[0]
    row = page.locator(f'#keys tbody tr[data-key="{prefix}"]')
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("viewer")
    expect(row.locator("td").nth(6)).not_to_have_text("never")  # it expires
    snap(page, "keys")
    with httpx.Client(base_url=web_server.url, headers={"Authorization": f"Token {token}"}) as client:
        assert client.get("/api/v2/projects/").status_code == 200
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: nothing happens
    row.get_by_role("button", name=re.compile("^Revoke key")).click()
    expect(row.get_by_role("button", name=re.compile("^Revoke key"))).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Revoke key")).click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    with httpx.Client(base_url=web_server.url, headers={"Authorization": f"Token {token}"}) as client:
        assert client.get("/api/v2/projects/").status_code == 401


def test_keys_page_tells_a_member_it_is_for_owners(page: Any, web_server: Server) -> None:
    member = web_server.create_key(role="member", name="browser-member")
    login(page, web_server, member)
    expect(page.get_by_role("link", name="Submit", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="API keys")).to_be_hidden()
    page.goto(f"{web_server.url}/keys")
    expect(page.get_by_role("status")).to_contain_text("Only owner keys manage API keys")
    expect(page.locator("#keys-owner")).to_be_hidden()


def test_a_viewer_key_is_not_offered_submit(page: Any, web_server: Server) -> None:
    viewer = web_server.create_key(role="viewer", name="browser-viewer-nav")
    login(page, web_server, viewer)
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.get_by_role("link", name="Pipelines")).to_be_visible()
    expect(page.get_by_role("link", name="Submit", exact=True)).to_be_hidden()
    expect(page.get_by_role("link", name="API keys")).to_be_hidden()
    page.goto(f"{web_server.url}/submit")
    expect(page.locator("#submit-denied")).to_be_visible()
    expect(page.locator("#submit-form")).to_be_hidden()


def test_submit_runs_over_a_collection_of_the_chosen_project(page: Any, web_server: Server) -> None:
    tag = unique("browser-collection")
    with web_server.client() as client:
        collection = client.post("/api/v2/collections/", json={"name": tag})
        assert collection.status_code == 201, collection.text
        stored = client.post(
            f"/api/v2/collections/{collection.json()['id']}/items/",
            json={
                "inputs": [{"name": f"{tag}-{i}", "kind": "text", "data": f"stored {i}"} for i in range(3)]
            },
        )
        assert stored.status_code == 201, stored.text
    login(page, web_server)
    page.get_by_role("link", name="Submit", exact=True).click()
    option = page.locator("#s-pipeline option", has_text="(test-delay)")
    page.get_by_label("Pipeline", exact=True).select_option(option.get_attribute("value"))
    page.get_by_label("Name", exact=True).fill(tag)
    page.get_by_label("Collection", exact=True).select_option(label=f"{tag} (3 items)")
    page.get_by_label("Sampling").select_option("first")
    page.get_by_label("Limit (empty: all)").fill("2")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = page.url.rsplit("/", 1)[1]
    with web_server.client() as client:
        job = client.get(f"{JOBS}{job_id}/").json()
        names = [i["name"] for i in client.get(f"{JOBS}{job_id}/items/").json()["results"]]
    assert job["total"] == 2 and names == [f"{tag}-0", f"{tag}-1"], (job, names)
