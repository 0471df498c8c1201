"""What the CLI's progress bars show for a job by reference: the collect bar, then the items."""

from __future__ import annotations

from typing import Any

from conveyor.cli.progress import collect_view, items_view


def job(
    status: str, total: int, completed: int, collect: tuple[str, int] | None, failed: int = 0
) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    if collect is not None:
        stages.append(
            {
                "key": "collect",
                "name": "Collect",
                "status": collect[0],
                "progress": 1.0 if collect[0] == "SUCCESS" else 0.0,
                "params": [
                    {"name": "sources", "value": 1},
                    {"name": "entries_listed", "value": collect[1]},
                    {"name": "bytes_declared", "value": 0},
                ],
            }
        )
    return {
        "status": status,
        "total": total,
        "completed": completed,
        "failed": failed,
        "progress": {"summary": {"progress": 0.5}, "stages": stages},
    }


def test_a_job_without_collect_has_only_the_item_bar() -> None:
    plain = job("STARTED", 10, 4, None)
    assert collect_view(plain) is None
    view = items_view(plain)
    assert (view.total, view.done) == (10, 4)
    delay_only = job("STARTED", 0, 0, None)
    assert (items_view(delay_only).total, items_view(delay_only).done) == (100, 50)


def test_while_listing_the_collect_total_is_unknown_and_the_item_total_grows() -> None:
    before = job("PENDING", 0, 0, ("CREATED", 0))
    assert collect_view(before).total is None  # type: ignore[union-attr]
    assert items_view(before).total is None  # nothing listed yet: not "0 of 0", not the delay figure
    listing = job("STARTED", 300, 120, ("STARTED", 300), failed=2)
    bar = collect_view(listing)
    assert bar is not None and (bar.total, bar.done) == (None, 300)
    assert "300 entries so far" in bar.status
    items = items_view(listing)
    assert (items.total, items.done) == (300, 122)
    assert "total grows while listing" in items.status and "2 failed" in items.status


def test_once_listed_both_totals_are_final() -> None:
    done = job("STARTED", 450, 200, ("SUCCESS", 450))
    bar = collect_view(done)
    assert bar is not None and (bar.total, bar.done) == (450, 450) and "listed" in bar.status
    items = items_view(done)
    assert (items.total, items.done) == (450, 200) and "grows" not in items.status
    failed = collect_view(job("FAILURE", 100, 100, ("FAILURE", 100)))
    assert failed is not None and "after 100 entries" in failed.status
