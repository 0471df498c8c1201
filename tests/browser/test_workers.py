"""The pipelines page's workers table: the server's local workers, one busy with a job (its link
leads to the job), and a pull worker gone silent shown as lost."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import update

from conveyor.clock import utcnow
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.tables import workers
from tests.helpers import Server, submit_texts
from tests.helpers.api import unique
from tests.helpers.browser import login, snap


def test_the_workers_table_shows_local_workers_a_running_job_and_a_lost_worker(
    page: Any, web_server: Server
) -> None:
    silent = unique("adc")
    store = Store(Settings(data_dir=web_server.data_dir), pool_size=1)
    try:
        account_id, _ = store.auth.ensure_defaults()
        store.workers.seen("pull", silent, host="gpu-lab", pipelines=["moths"], account_id=account_id)
        with store.db.write() as conn:
            conn.execute(
                update(workers)
                .where(workers.c.name == silent)
                .values(last_seen_at=utcnow() - timedelta(hours=1))
            )
    finally:
        store.close()
    # Long enough to still run while the page refreshes; canceled at the end.
    job = submit_texts(web_server, 200, name=unique("workers-page"), config={"item_seconds": 0.1})

    login(page, web_server)
    page.get_by_role("link", name="Pipelines").click()
    table = page.locator("#workers tbody")
    host = socket.gethostname()
    for slot in (0, 1):
        row = table.locator(f'tr[data-worker="{host}/local-{slot}"]')
        expect(row).to_contain_text("local")
        expect(row).to_contain_text("test-delay")
    lost = table.locator(f'tr[data-worker="{silent}"]')
    expect(lost).to_contain_text("LOST")
    expect(lost).to_contain_text("gpu-lab")
    expect(lost).to_contain_text("pull")
    busy = table.locator('tr[data-state="active"]').first
    expect(busy).to_contain_text(f"#{job['id']}")  # within a refresh or two
    snap(page, "workers")
    busy.get_by_role("link", name=f"#{job['id']}").click()
    page.wait_for_url(f"{web_server.url}/jobs/{job['id']}")
    expect(page.locator("#job-title")).to_contain_text(f"#{job['id']}")
    with web_server.client() as client:
        assert client.post(f"/api/v2/jobs/{job['id']}/cancel/").status_code in (200, 202)
