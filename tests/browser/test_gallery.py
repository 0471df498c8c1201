"""The job page's results gallery for image classifiers: thumbnails, labels, failures, saliency maps."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from playwright.sync_api import expect

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server, wait_status
from tests.helpers.api import JOBS, unique
from tests.helpers.browser import login, snap


def _b64(name: str, data: bytes) -> dict[str, str]:
    return {"name": name, "kind": "base64", "data": base64.b64encode(data).decode()}


def _run(server: Server, pipeline: str, inputs: list[dict[str, str]], **body: Any) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(
            f"{JOBS}?start_now=true",
            json={"name": unique(f"browser-{pipeline}"), "pipeline": pipeline, "inputs": inputs, **body},
        )
        assert response.status_code == 201, response.text
        job: dict[str, Any] = wait_status(client, response.json()["id"], {"SUCCESS", "FAILURE"}, timeout=180)
        return job


def test_digits_job_shows_thumbnails_labels_and_the_failed_item(page: Any, web_server: Server) -> None:
    digits = holdout_pngs(limit=4)
    inputs = [_b64(name, data) for name, data, _ in digits] + [_b64("broken.png", b"not a png")]
    job = _run(web_server, "digits", inputs, max_failed_ratio=1.0)
    login(page, web_server)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    gallery = page.get_by_role("list", name="Results gallery")
    tiles = gallery.locator("li")
    expect(tiles).to_have_count(5)
    for name, _, _ in digits:
        img = gallery.get_by_role("img", name=f"Sample of {name}")
        expect(img).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    labels = gallery.locator(".tile:not(.failed) .item-label")
    expect(labels).to_have_count(4)
    for text in labels.all_inner_texts():
        assert text.strip() in {str(d) for d in range(10)}, text
    expect(gallery.locator(".tile:not(.failed) .item-score").first).to_contain_text("%")
    failed = gallery.locator(".tile.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("broken.png")
    expect(failed).to_contain_text("Failed: not a readable image")
    expect(failed).not_to_contain_text("BytesIO")
    expect(failed.locator(".no-sample")).to_have_text("no thumbnail")
    expect(gallery.get_by_role("button", name="Show saliency map")).to_have_count(0)  # explain was off
    page.locator("#gallery-card").scroll_into_view_if_needed()
    snap(page, "gallery")


def test_a_text_job_has_no_gallery(page: Any, web_server: Server) -> None:
    job = _run(web_server, "test-delay", [{"name": "t", "kind": "text", "data": "hello"}])
    login(page, web_server)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text("SUCCESS")
    expect(page.locator("#items tbody tr")).to_have_count(1)
    expect(page.locator("#gallery-card")).to_be_hidden()


def test_explained_imagenet_job_toggles_the_saliency_map(page: Any, web_server: Server) -> None:
    pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
    from conveyor import photos  # needs scikit-image (the ml extra)

    (cat,) = photos.bundled(limit=1)
    job = _run(web_server, "imagenet-classifier", [_b64(cat.name, cat.data)], explain=True)
    assert job["status"] == "SUCCESS", job
    login(page, web_server)
    page.goto(f"{web_server.url}/jobs/{job['id']}")
    gallery = page.get_by_role("list", name="Results gallery")
    toggle = gallery.get_by_role("button", name="Show saliency map")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    overlay = gallery.get_by_role("img", name=f"Saliency map of {cat.name} (brighter = more important)")
    expect(overlay).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
    hide = gallery.get_by_role("button", name="Hide saliency map")
    expect(hide).to_have_attribute("aria-pressed", "true")
    hide.click()
    expect(overlay).to_be_hidden()
