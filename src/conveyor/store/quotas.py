"""What one key has submitted lately: the figures per-key quotas are checked against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from conveyor.domain.status import ACTIVE
from conveyor.store.database import Database
from conveyor.store.history import status_clause
from conveyor.store.tables import jobs


@dataclass(frozen=True)
class Usage:
    jobs_since: int
    bytes_since: int
    oldest_since: datetime | None  # when the window's oldest job was created (for Retry-After)
    active_jobs: int


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def usage(self, account_id: int, prefix: str, since: datetime) -> Usage:
        mine = [jobs.c.account_id == account_id, jobs.c.submitted_by == prefix]
        with self.db.read() as conn:
            recent = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(jobs.c.input_byte_amount), 0),
                    func.min(jobs.c.created_at),
                ).where(*mine, jobs.c.created_at >= since)
            ).one()
            active = conn.execute(
                select(func.count()).select_from(jobs).where(*mine, status_clause(ACTIVE))
            ).scalar_one()
        return Usage(int(recent[0]), int(recent[1]), recent[2], int(active))
