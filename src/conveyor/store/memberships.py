"""Project memberships: a project-bound key may also be a member of other projects, with a role
in each (owner | member | viewer). Account-wide keys need none: their role holds everywhere."""

from __future__ import annotations

from sqlalchemy import RowMapping, delete, insert, select, update

from conveyor.clock import utcnow
from conveyor.domain.access import ROLES
from conveyor.errors import Conflict, InvalidInput, NotFound
from conveyor.store.database import Database
from conveyor.store.principal_cache import PrincipalCache
from conveyor.store.tables import api_keys, memberships


class MembershipRepository:
    def __init__(self, db: Database, principals: PrincipalCache | None = None) -> None:
        self.db = db
        self.principals = principals  # cleared on every change: roles are part of a principal

    def roles_of(self, key_id: int) -> dict[int, str]:
        """project id -> role, for one key's memberships."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(memberships.c.project_id, memberships.c.role).where(memberships.c.key_id == key_id)
            )
            return {r.project_id: r.role for r in rows}

    def members(self, account_id: int, project_id: int) -> list[RowMapping]:
        """Keys with a role in the project: bound to it, or members of it."""
        with self.db.read() as conn:
            bound = conn.execute(
                select(api_keys.c.prefix, api_keys.c.name, api_keys.c.role, api_keys.c.created_at).where(
                    api_keys.c.account_id == account_id,
                    api_keys.c.project_id == project_id,
                    api_keys.c.revoked_at.is_(None),
                )
            ).mappings()
            joined = conn.execute(
                select(api_keys.c.prefix, api_keys.c.name, memberships.c.role, memberships.c.created_at)
                .join(api_keys, api_keys.c.id == memberships.c.key_id)
                .where(
                    api_keys.c.account_id == account_id,
                    memberships.c.project_id == project_id,
                    api_keys.c.revoked_at.is_(None),
                )
            ).mappings()
            return [*bound, *joined]

    def set_role(self, account_id: int, project_id: int, prefix: str, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        with self.db.write() as conn:
            key = conn.execute(
                select(api_keys.c.id, api_keys.c.project_id).where(
                    api_keys.c.account_id == account_id, api_keys.c.prefix == prefix
                )
            ).first()
            if key is None:
                raise NotFound(f"No key with prefix {prefix!r}.")
            if key.project_id is None:
                raise Conflict(
                    f"Key {prefix} is account-wide: its role already holds in every project. "
                    "Memberships are for project-bound keys."
                )
            if key.project_id == project_id:
                raise Conflict(f"Key {prefix} is bound to this project; its own role holds here.")
            done = conn.execute(
                update(memberships)
                .where(memberships.c.key_id == key.id, memberships.c.project_id == project_id)
                .values(role=role)
            ).rowcount
            if not done:
                conn.execute(
                    insert(memberships).values(
                        key_id=key.id, project_id=project_id, role=role, created_at=utcnow()
                    )
                )
        if self.principals is not None:
            self.principals.clear()

    def remove(self, account_id: int, project_id: int, prefix: str) -> None:
        with self.db.write() as conn:
            key_id = conn.execute(
                select(api_keys.c.id).where(api_keys.c.account_id == account_id, api_keys.c.prefix == prefix)
            ).scalar()
            done = (
                conn.execute(
                    delete(memberships).where(
                        memberships.c.key_id == key_id, memberships.c.project_id == project_id
                    )
                ).rowcount
                if key_id is not None
                else 0
            )
        if self.principals is not None:
            self.principals.clear()
        if not done:
            raise NotFound(f"Key {prefix!r} is not a member of this project.")
