"""The collect stage's loop: a job's collect plan -> pages of item rows, the plan kept current.

The plan (``jobs.collect``, made at submit) lists the sources, the kind the items take, the
job's cap (``limit``, ``max_items``) and where listing stands: ``cursor`` (source index and its
position), ``next_seq``, ``listed``, ``bytes``. Each yielded page has already advanced the
plan; the executor commits rows and plan together, so a restart resumes exactly there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from conveyor.domain.status import ItemStatus
from conveyor.errors import TooLarge
from conveyor.inputs.collect import Collector
from conveyor.inputs.manifest import Entry
from conveyor.settings import Settings


def collect_pages(
    collector: Collector, plan: dict[str, Any], settings: Settings
) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """``(rows, done)`` per page; ``plan`` is updated in place before each yield, and marked
    ``done`` with the last page. Raises TooLarge past the job's input cap."""
    sources: list[dict[str, Any]] = plan["sources"]
    cursor: dict[str, Any] = plan.setdefault("cursor", {"source": 0, "position": {}})
    limit = plan.get("limit")
    cap = int(plan.get("max_items") or settings.max_inputs_per_job)
    page_size = settings.chunk_size
    while cursor["source"] < len(sources):
        source = sources[cursor["source"]]
        for page in collector.pages(source, cursor["position"], page_size):
            entries = page.entries
            room = None if limit is None else max(0, int(limit) - plan["next_seq"])
            reached_limit = room is not None and len(entries) >= room
            if room is not None:
                entries = entries[:room]
            if plan["next_seq"] + len(entries) > cap:
                raise TooLarge(
                    f"The job's inputs are more than the cap of {cap} per job (CONVEYOR_MAX_INPUTS_PER_JOB); "
                    f"{source['label']!r} lists more."
                )
            rows = [_row(plan["next_seq"] + i, entry, plan["item_kind"]) for i, entry in enumerate(entries)]
            plan["next_seq"] += len(rows)
            plan["listed"] = int(plan.get("listed", 0)) + len(rows)
            plan["bytes"] = int(plan.get("bytes", 0)) + sum(entry.size for entry in entries)
            cursor["position"] = page.cursor
            if reached_limit:
                plan["done"] = True
                yield rows, True
                return
            if page.last:
                cursor["source"] += 1
                cursor["position"] = {}
                if cursor["source"] >= len(sources):
                    plan["done"] = True
                    yield rows, True
                    return
            yield rows, False
    plan["done"] = True
    yield [], True


def _row(seq: int, entry: Entry, kind: str) -> dict[str, Any]:
    failed = entry.error is not None
    return {
        "seq": seq,
        "name": entry.name,
        "kind": kind,
        "byte_size": entry.size,
        "data": None,
        "ref": entry.ref or None,
        "source": None,
        "status": ItemStatus.FAILURE.value if failed else ItemStatus.PENDING.value,
        "attempts": 0,
        "error": f"invalid_input: {entry.error}" if failed else None,
    }
