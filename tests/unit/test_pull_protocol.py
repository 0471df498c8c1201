"""The pull protocol's pure parts: reply subjects, registered slugs, and the two result shapes."""

from __future__ import annotations

from conveyor.domain.pull import pull_slug, registered_slug, subject_item
from conveyor.pipelines import pull


def test_a_reply_subject_names_its_item_and_anything_else_names_none() -> None:
    assert subject_item("4567.Zk3_abc") == 4567
    for forged in ("4567", "4567.", ".abc", "x1.abc", "-1.abc", "1" * 19 + ".abc", ""):
        assert subject_item(forged) is None, forged


def test_a_pull_pipeline_keeps_the_slug_its_worker_registered() -> None:
    assert pull_slug(3, "moths_2024") == "pull:3/moths_2024"
    assert registered_slug("pull:3/moths_2024") == "moths_2024"
    assert registered_slug("digits") == "digits"
    assert registered_slug(None) is None


def test_a_pipeline_result_becomes_the_items_detections_and_labels() -> None:
    detection = {
        "source_image_id": "7",
        "bbox": {"x1": 0, "y1": 0, "x2": 1, "y2": 1},
        "classifications": [
            {"classification": "Lepidoptera", "terminal": False},
            {"classification": "Noctua pronuba", "terminal": True},
        ],
    }
    body = {
        "pipeline": "m",
        "source_images": [{"id": "7", "url": "u"}],
        "detections": [detection],
        "total_time": 1.5,
    }
    outcome = pull.outcome(7, "7.a", body)
    assert outcome.ok and outcome.result["labels"] == ["Noctua pronuba"]
    assert outcome.result["detections"] == [detection] and outcome.result["total_time"] == 1.5
    missing = pull.outcome(8, "8.a", body)  # the answer is about another image
    assert not missing.ok and "no result for this image" in (missing.error or "")


def test_an_error_result_fails_the_item_with_the_workers_message() -> None:
    failed = pull.outcome(7, "7.a", {"error": "could not download image", "image_id": "7"})
    assert not failed.ok and failed.error == "could not download image"
    assert not pull.outcome(7, "7.a", ["not", "an", "object"]).ok
