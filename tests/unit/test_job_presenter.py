"""The native job detail's log lines: ``[YYYY-MM-DD HH:MM:SS] LEVEL message``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor.api.schemas.jobs import format_log


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(2026, 12, 6, 21, 3, 41, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 5, 5, 5, 5, 5, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 5, 5, 5, 5, 5),
    ],
)
def test_a_log_line_shows_its_time_to_the_second(stamp: datetime) -> None:
    line = format_log({"created_at": stamp, "level": "WARNING", "message": "careful [x]"})
    assert line == f"[{stamp.strftime('%Y-%m-%d %H:%M:%S')}] WARNING careful [x]"
