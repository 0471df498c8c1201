"""Pure domain types: statuses, the transition table, stages. No I/O here."""

from conveyor.domain.status import (
    ACTIVE,
    STATUS_GROUPS,
    TERMINAL,
    ChunkStatus,
    ItemStatus,
    JobStatus,
    allowed_sources,
    check_transition,
    resolve_status_filter,
)

__all__ = [
    "ACTIVE",
    "STATUS_GROUPS",
    "TERMINAL",
    "ChunkStatus",
    "ItemStatus",
    "JobStatus",
    "allowed_sources",
    "check_transition",
    "resolve_status_filter",
]
