"""Items whose bytes Conveyor stores itself (``blob:`` and ``collection-item:`` refs), read just
before their batch runs. An item whose bytes are gone fails with ``input_unavailable`` and the
reason; the rest of the chunk runs.

Items with http(s):// or s3:// refs are left as they are: fetching those (bounded prefetch,
retries, the SSRF guard) is the worker's fetch stage, which takes over this module's job too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from conveyor.clock import utcnow
from conveyor.domain.work import ItemInput, ItemOutcome
from conveyor.errors import InvalidInput, TooLarge
from conveyor.inputs import stored
from conveyor.store import Store


def hydrate(
    store: Store, items: Sequence[ItemInput], max_bytes: int
) -> tuple[list[ItemInput], list[ItemOutcome]]:
    """(items ready to run, outcomes of the items whose stored bytes cannot be read)."""
    ready: list[ItemInput] = []
    failed: list[ItemOutcome] = []
    for item in items:
        if item.data or not stored.is_stored(item.ref):
            ready.append(item)
            continue
        assert item.ref is not None
        try:
            ready.append(replace(item, data=stored.read(store, item.ref, max_bytes)))
        except (InvalidInput, TooLarge) as exc:  # InputUnavailable is an InvalidInput
            now = utcnow()
            error = f"input_unavailable: {exc.message}"
            failed.append(ItemOutcome(item.id, False, error=error, started_at=now, finished_at=now))
    return ready, failed
