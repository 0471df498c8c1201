"""Who is calling and what they may touch: the principal, its job scope and the role checks.

One place for the access rules the store, the services and the API all apply: roles (``owner``
manages keys, projects and services; ``member`` submits and acts on jobs; ``viewer`` reads;
``worker`` only leases work and posts its results: an HTTP worker's key), a key's visible
projects, and the 403s for keys that may not write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.errors import Forbidden

ROLES = ("owner", "member", "viewer", "worker")
WRITE_ROLES = ("owner", "member")
#: Roles that may lease chunks and post their results (``conveyor worker --server``).
LEASE_ROLES = ("owner", "member", "worker")
#: The role of keys that may do nothing else.
WORKER_ROLE = "worker"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's account, role and (optionally) the one project it is bound to."""

    key_id: int
    key_prefix: str
    key_name: str
    account_id: int
    account_slug: str
    role: str
    project_id: int | None
    # Project-bound keys: project id -> role (the bound project, plus its memberships).
    # None: an account-wide key, whose role holds in every project of the account.
    project_roles: Mapping[int, str] | None = None

    @property
    def can_write(self) -> bool:
        """May write somewhere (each action still checks the role in the job's project)."""
        if self.project_roles is not None:
            return any(r in WRITE_ROLES for r in self.project_roles.values())
        return self.role in WRITE_ROLES

    def visible_projects(self) -> frozenset[int] | None:
        """The projects this key sees; None: all of its account's."""
        return frozenset(self.project_roles) if self.project_roles is not None else None

    def role_in(self, project_id: int) -> str | None:
        """The key's role in one project of its account (None: it does not see the project)."""
        if self.project_roles is not None:
            return self.project_roles.get(project_id)
        return self.role


@dataclass(frozen=True)
class Scope:
    """Which jobs a caller may see: one account, optionally narrowed to some projects."""

    account_id: int
    project_ids: frozenset[int] | None = None


def scope_of(principal: Principal) -> Scope:
    return Scope(principal.account_id, principal.visible_projects())


def lease_scope(principal: Principal) -> Scope:
    """The jobs whose work this key may lease: its account's, or its projects where its role
    may lease (403 when it may lease nowhere, e.g. a viewer key)."""
    if principal.project_roles is None:
        if principal.role not in LEASE_ROLES:
            raise Forbidden(
                f"Leasing work needs a worker, member or owner key; this key's role is {principal.role}."
            )
        return Scope(principal.account_id)
    projects = frozenset(p for p, role in principal.project_roles.items() if role in LEASE_ROLES)
    if not projects:
        raise Forbidden(
            f"Leasing work needs a worker, member or owner key; this key's role is {principal.role}."
        )
    return Scope(principal.account_id, projects)


def require_lease(principal: Principal, project_id: int) -> None:
    """403 unless the key may lease work in ``project_id`` (a worker, member or owner there)."""
    role = principal.role_in(project_id)
    if role not in LEASE_ROLES:
        raise Forbidden(
            f"Pulling work needs a worker, member or owner key; this key's role here is {role}.",
            project_id=project_id,
        )


def refuse_worker_key(principal: Principal) -> None:
    """403 for a worker key anywhere but the worker routes: it may lease and post results only."""
    if principal.role == WORKER_ROLE:
        raise Forbidden(
            "This is a worker key: it may only lease work and post results (/api/v2/workers/leases/, "
            "and Antenna's pull protocol); "
            "use a member or owner key for anything else."
        )


def require_write(principal: Principal, project_id: int | None = None) -> None:
    """403 for a read-only key: anywhere (no project given), or in ``project_id``.

    An account-wide key's role holds in every project, so for it both questions are one.
    """
    if project_id is None or principal.project_roles is None:
        if not principal.can_write:
            raise Forbidden(f"This API key is read-only (role {principal.role}).")
        return
    role = principal.role_in(project_id)
    if role not in WRITE_ROLES:
        raise Forbidden(f"This API key is read-only in this project (role {role}).", project_id=project_id)


def require_owner(principal: Principal) -> None:
    """403 unless an owner key (of the account, or of the project it is bound to)."""
    if principal.role != "owner":
        raise Forbidden(
            f"Managing keys and projects needs an owner key; this key's role is {principal.role}."
        )


def require_account_owner(principal: Principal) -> None:
    """403 unless an account-wide owner key (processing services belong to the whole account)."""
    if principal.role != "owner" or principal.project_roles is not None:
        raise Forbidden(
            "Registering, checking and removing processing services needs an account-wide owner key; "
            f"this key's role is {principal.role}"
            f"{' (bound to a project)' if principal.project_roles is not None else ''}."
        )
