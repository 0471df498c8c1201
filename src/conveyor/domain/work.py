"""The worker/pipeline contract: what a worker holds (a claim on a chunk and its job's state),
what a pipeline is handed (item inputs) and what comes back to the store (item outcomes, log
lines, the write-back's answer).

Plain values, no I/O: ``store.chunks`` makes and takes them, ``worker`` moves them, and the
pipeline plugins (``pipelines/*``) depend on this module only, never on the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.clock import utcnow
from conveyor.domain.artifacts import Artifact
from conveyor.domain.status import ChunkKind, JobStatus


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to know about the job of a chunk."""

    job_id: int
    status: JobStatus
    pipeline_slug: str | None
    config: dict[str, Any]
    explain: bool
    delay: float
    deadline_at: datetime | None
    output: dict[str, Any] | None = None  # where finished items go as sharded JSONL: {"uri": ...}
    secret: str | None = field(default=None, repr=False)  # per-job S3 credentials, encrypted


@dataclass(frozen=True)
class Claim:
    """A chunk leased to one worker under ``token``; ``job`` is its job's state as the claim found
    it (already STARTED when this was the job's first chunk)."""

    chunk_id: int
    job_id: int
    kind: ChunkKind
    first_seq: int
    last_seq: int
    token: str
    attempt: int
    job: JobContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ItemInput:
    """An item as a pipeline sees it. ``ref`` (http(s)://, s3://, blob:, collection-item:) is
    where its bytes are read just before the model needs them, when they are not in ``data``."""

    id: int
    seq: int
    name: str
    kind: str
    data: bytes
    ref: str | None = None


@dataclass
class ItemOutcome:
    id: int
    ok: bool
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    artifacts: tuple[Artifact, ...] = ()
    byte_size: int | None = None  # bytes a worker read from the item's reference (None: not fetched)


@dataclass
class LogLine:
    level: str
    message: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class WriteBack:
    """Outcome of a write-back: whether the lease still held, the job's state after it, and how
    many items it wrote (moved out of PENDING: a replayed outcome is not written twice)."""

    held: bool
    job_status: JobStatus | None
    written: int = 0


def shown_source(source: str | None, ref: str | None) -> str | None:
    """Where an item's input came from, as users see it: its recorded origin, else its reference
    (an URL or S3 object; a blob-store key is an internal detail and is not shown)."""
    if source is not None:
        return source
    if ref is not None and not ref.startswith("blob:"):
        return ref
    return None
