"""Tenancy use cases for owners: API keys (list, create, revoke, expiry) and projects.

Roles: ``owner`` manages keys and projects, ``member`` submits / cancels / retries, ``viewer``
reads. A key bound to a project acts only inside it, for keys as for jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import RowMapping

from conveyor.clock import utcnow
from conveyor.domain.access import Principal, require_owner
from conveyor.errors import Forbidden, InvalidInput, NotFound
from conveyor.store import Store
from conveyor.store.auth import NewKey

MAX_KEY_DAYS = 36_500


@dataclass(frozen=True)
class KeyRequest:
    name: str
    role: str
    project: str | None = None  # project slug; a bound owner may only give its own
    expires_in_days: float | None = None


class KeyService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list_keys(self, principal: Principal) -> list[RowMapping]:
        require_owner(principal)
        return self.store.auth.list_keys(principal.account_id, principal.project_id)

    def project_slugs(self, principal: Principal) -> dict[int, str]:
        return {r["id"]: r["slug"] for r in self.store.auth.projects(principal.account_id, None)}

    def create(self, principal: Principal, request: KeyRequest) -> NewKey:
        require_owner(principal)
        project_id: int | None = None
        if request.project is not None:
            project_id = self.store.auth.project_by_slug(principal.account_id, request.project)
        if principal.project_id is not None:
            if project_id not in (None, principal.project_id):
                raise NotFound(f"Project {request.project!r} not found.")
            project_id = principal.project_id  # a bound owner's keys stay in its project
        expires_at: datetime | None = None
        if request.expires_in_days is not None:
            if not 0 < request.expires_in_days <= MAX_KEY_DAYS:
                raise InvalidInput(f"expires_in_days must be above 0 and at most {MAX_KEY_DAYS} (100 years).")
            expires_at = utcnow() + timedelta(days=request.expires_in_days)
        new = self.store.auth.create_key(
            account_id=principal.account_id,
            name=request.name,
            role=request.role,
            project_id=project_id,
            expires_at=expires_at,
        )
        self._audit(principal, "key.create", f"key:{new.prefix}", project_id)
        return new

    def revoke(self, principal: Principal, prefix: str) -> None:
        require_owner(principal)
        self.store.auth.revoke_key(principal.account_id, prefix, principal.project_id)
        self._audit(principal, "key.revoke", f"key:{prefix}", principal.project_id)

    def create_project(self, principal: Principal, slug: str, name: str | None) -> RowMapping:
        require_owner(principal)
        if principal.project_id is not None:
            raise Forbidden("A key bound to one project cannot create projects.")
        project_id = self.store.auth.ensure_project(principal.account_id, slug, name)
        self._audit(principal, "project.create", f"project:{slug}", project_id)
        return next(r for r in self.store.auth.projects(principal.account_id, frozenset({project_id})))

    # ------------------------------------------------------------ memberships
    def _owned_project(self, principal: Principal, project_id: int) -> None:
        """404 unless the project is the caller's to see; 403 unless the caller owns it."""
        visible = self.store.auth.projects(principal.account_id, principal.visible_projects())
        if project_id not in {r["id"] for r in visible}:
            raise NotFound(f"Project {project_id} not found.")
        role = principal.role_in(project_id)
        if role != "owner":
            raise Forbidden(f"Managing a project's members needs the owner role in it; this key is {role}.")

    def members(self, principal: Principal, project_id: int) -> list[RowMapping]:
        self._owned_project(principal, project_id)
        return self.store.memberships.members(principal.account_id, project_id)

    def set_member(self, principal: Principal, project_id: int, prefix: str, role: str) -> None:
        self._owned_project(principal, project_id)
        self.store.memberships.set_role(principal.account_id, project_id, prefix, role)
        self._audit(principal, f"member.set:{role}", f"key:{prefix}", project_id)

    def remove_member(self, principal: Principal, project_id: int, prefix: str) -> None:
        self._owned_project(principal, project_id)
        self.store.memberships.remove(principal.account_id, project_id, prefix)
        self._audit(principal, "member.remove", f"key:{prefix}", project_id)

    def _audit(self, principal: Principal, action: str, target: str, project_id: int | None) -> None:
        self.store.audit.record(principal.account_id, principal.key_prefix, action, target, project_id)

    def audit(self, principal: Principal, *, after: int, limit: int) -> list[RowMapping]:
        require_owner(principal)
        return self.store.audit.page(
            principal.account_id, principal.visible_projects(), after=after, limit=limit
        )
