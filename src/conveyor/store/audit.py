"""The audit trail: key and membership changes and job actions, with who and when."""

from __future__ import annotations

from sqlalchemy import RowMapping, insert, select

from conveyor.clock import utcnow
from conveyor.store.database import Database
from conveyor.store.tables import audit_events


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self, account_id: int, actor: str, action: str, target: str, project_id: int | None = None
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                insert(audit_events).values(
                    account_id=account_id,
                    project_id=project_id,
                    actor=actor,
                    action=action,
                    target=target,
                    created_at=utcnow(),
                )
            )

    def page(
        self, account_id: int, projects: frozenset[int] | None, *, after: int, limit: int
    ) -> list[RowMapping]:
        """Oldest first from ``after``; a project-bound caller sees only its projects' rows."""
        query = select(audit_events).where(audit_events.c.account_id == account_id, audit_events.c.id > after)
        if projects is not None:
            query = query.where(audit_events.c.project_id.in_(sorted(projects)))
        with self.db.read() as conn:
            return list(conn.execute(query.order_by(audit_events.c.id).limit(limit)).mappings())
