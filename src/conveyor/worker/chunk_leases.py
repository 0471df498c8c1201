"""What a ``ChunkExecutor`` needs from wherever its chunks come from: the chunk verbs.

``store.chunks`` (``ChunkRepository``) is one: local and Celery workers hold leases in the
database. ``worker/lease_client.py`` is the other: an HTTP worker holds the same leases through
the API (``/api/v2/workers/leases/``). The lease token guard and the PENDING-only write-back
stay on the server either way, so both are exactly-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from conveyor.domain.work import Claim, ItemInput, ItemOutcome, JobContext, LogLine, WriteBack
from conveyor.store.outputs import ShardWritten


class ChunkLeases(Protocol):
    def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        chunk_id: int | None = None,
        pipeline_slugs: Sequence[str] = (),
    ) -> Claim | None: ...

    def job_context(self, job_id: int) -> JobContext | None: ...

    def pending_items(self, claim: Claim) -> list[ItemInput]: ...

    def heartbeat(
        self, claim: Claim, lease_seconds: float, *, delay_progress: float | None = None
    ) -> JobContext | None: ...

    def write_back(
        self,
        claim: Claim,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        *,
        lease_seconds: float,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None = None,
        shards: Sequence[ShardWritten] = (),
    ) -> WriteBack: ...

    def release(self, claim: Claim, *, requeue: bool) -> None: ...

    def finish_delay(self, claim: Claim) -> list[int]: ...
