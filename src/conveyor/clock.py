"""UTC time helpers: every timestamp Conveyor stores or sends is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def isoformat(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
