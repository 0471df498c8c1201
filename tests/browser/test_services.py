"""The pipelines page's processing services: an owner registers a real test service, sees its
health and remote pipelines, checks and removes it; a member sees them but is offered no actions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers import Server
from tests.helpers.api import unique
from tests.helpers.browser import login, snap
from tests.processing_service import ProcessingService


@pytest.fixture
def service() -> Iterator[ProcessingService]:
    started = ProcessingService().start()
    yield started
    started.stop()


def test_an_owner_registers_checks_and_removes_a_processing_service(
    page: Any, web_server: Server, service: ProcessingService
) -> None:
    name = unique("web")
    login(page, web_server)
    page.get_by_role("link", name="Pipelines").click()
    page.get_by_label("Endpoint URL").fill(service.url)
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_role("button", name="Register").click()
    row = page.locator(f'#services tbody tr[data-service="{name}"]')
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text(f"remote:{name}/brightness")
    # Its pipelines join the catalog above.
    expect(page.locator("#pipelines tbody")).to_contain_text(f"remote:{name}/flaky")
    snap(page, "services")

    service.stop()  # the next check finds it down and says why
    row.get_by_role("button", name=f"Check service {name}").click()
    expect(row).to_contain_text("down")
    expect(row).to_contain_text("could not be reached")

    member = web_server.create_key(role="member", name="browser-member-services")
    member_page = page.context.new_page()
    login(member_page, web_server, member)
    member_page.goto(f"{web_server.url}/pipelines")
    member_row = member_page.locator(f'#services tbody tr[data-service="{name}"]')
    expect(member_row).to_contain_text(name)
    expect(member_row.get_by_role("button")).to_have_count(0)
    expect(member_page.locator("#service-add")).to_be_hidden()

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Remove service")).click()
    expect(row).to_have_count(0)
    expect(page.locator("#pipelines tbody")).not_to_contain_text(f"remote:{name}/")
