"""Accounts, projects and API keys. Only a SHA-256 hash of a key's secret is stored.

Authenticating a key gives a ``conveyor.domain.access.Principal`` (the roles and checks live there).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, insert, select, update

from conveyor.clock import utcnow
from conveyor.domain.access import ROLES, Principal
from conveyor.errors import InvalidInput, NotFound, Unauthenticated
from conveyor.store.database import Database
from conveyor.store.principal_cache import PrincipalCache, token_digest
from conveyor.store.tables import accounts, api_keys, memberships, projects

DEFAULT_ACCOUNT = "default"
DEFAULT_PROJECT = "default"
_ALPHABET = string.ascii_letters + string.digits
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    id: int
    prefix: str
    secret: str

    @property
    def token(self) -> str:
        """The full key as the client sends it: ``<prefix>.<secret>`` (Modzy's shape)."""
        return f"{self.prefix}.{self.secret}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


class AuthRepository:
    def __init__(self, db: Database, cache: PrincipalCache | None = None) -> None:
        self.db = db
        self.cache = cache if cache is not None else PrincipalCache()

    def ensure_defaults(self) -> tuple[int, int]:
        """The default account and project exist (idempotent). Returns their ids."""
        with self.db.write() as conn:
            account_id = conn.execute(
                select(accounts.c.id).where(accounts.c.slug == DEFAULT_ACCOUNT)
            ).scalar()
            if account_id is None:
                account_id = conn.execute(
                    insert(accounts)
                    .values(slug=DEFAULT_ACCOUNT, name="Default account", created_at=utcnow())
                    .returning(accounts.c.id)
                ).scalar_one()
            project_id = conn.execute(
                select(projects.c.id).where(
                    projects.c.account_id == account_id, projects.c.slug == DEFAULT_PROJECT
                )
            ).scalar()
            if project_id is None:
                project_id = self._insert_project(conn, account_id, DEFAULT_PROJECT, "Default project")
        return account_id, project_id

    def ensure_account(self, slug: str, name: str | None = None) -> tuple[int, int]:
        """An account (another tenant) and its `default` project exist (idempotent). Returns their ids."""
        if slug == DEFAULT_ACCOUNT:
            return self.ensure_defaults()
        with self.db.write() as conn:
            account_id = conn.execute(select(accounts.c.id).where(accounts.c.slug == slug)).scalar()
            if account_id is None:
                account_id = conn.execute(
                    insert(accounts)
                    .values(slug=slug, name=name or slug, created_at=utcnow())
                    .returning(accounts.c.id)
                ).scalar_one()
        return int(account_id), self.ensure_project(int(account_id), DEFAULT_PROJECT, "Default project")

    @staticmethod
    def _insert_project(conn: Connection, account_id: int, slug: str, name: str) -> int:
        return int(
            conn.execute(
                insert(projects)
                .values(account_id=account_id, slug=slug, name=name, description="", created_at=utcnow())
                .returning(projects.c.id)
            ).scalar_one()
        )

    def ensure_project(self, account_id: int, slug: str, name: str | None = None) -> int:
        with self.db.write() as conn:
            found = conn.execute(
                select(projects.c.id).where(projects.c.account_id == account_id, projects.c.slug == slug)
            ).scalar()
            return (
                int(found)
                if found is not None
                else self._insert_project(conn, account_id, slug, name or slug)
            )

    def create_key(
        self,
        *,
        account_id: int,
        name: str,
        role: str,
        project_id: int | None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        if role not in ROLES:
            raise InvalidInput(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        prefix, secret = _random(12), _random(40)
        with self.db.write() as conn:
            key_id = conn.execute(
                insert(api_keys)
                .values(
                    account_id=account_id,
                    project_id=project_id,
                    prefix=prefix,
                    secret_hash=_hash(secret),
                    name=name,
                    role=role,
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
                .returning(api_keys.c.id)
            ).scalar_one()
        return NewKey(key_id, prefix, secret)

    def list_keys(self, account_id: int, project_id: int | None = None) -> list[RowMapping]:
        """The account's keys (only those bound to ``project_id`` when given); never a hash."""
        where = [api_keys.c.account_id == account_id]
        if project_id is not None:
            where.append(api_keys.c.project_id == project_id)
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.prefix,
                        api_keys.c.name,
                        api_keys.c.role,
                        api_keys.c.project_id,
                        api_keys.c.created_at,
                        api_keys.c.last_used_at,
                        api_keys.c.expires_at,
                        api_keys.c.revoked_at,
                    )
                    .where(*where)
                    .order_by(api_keys.c.id)
                ).mappings()
            )

    def revoke_key(self, account_id: int, prefix: str, project_id: int | None = None) -> None:
        where = [
            api_keys.c.account_id == account_id,
            api_keys.c.prefix == prefix,
            api_keys.c.revoked_at.is_(None),
        ]
        if project_id is not None:
            where.append(api_keys.c.project_id == project_id)
        with self.db.write() as conn:
            done = conn.execute(update(api_keys).where(*where).values(revoked_at=utcnow())).rowcount
        self.cache.clear()
        if not done:
            raise NotFound(f"No active key with prefix {prefix!r}.")

    def cached(self, token: str) -> Principal | None:
        """The key's principal if the cache holds it (no I/O: callable from the event loop)."""
        return self.cache.get(token_digest(token.strip()))

    def authenticate(self, token: str) -> Principal:
        """The key's principal: from the cache (store/principal_cache.py) or the database."""
        digest = token_digest(token.strip())
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        read_at = time.monotonic()
        principal, expires_at = self._authenticate(token)
        self.cache.put(digest, principal, read_at=read_at, expires_at=expires_at)
        return principal

    def _authenticate(self, token: str) -> tuple[Principal, datetime | None]:
        prefix, _, secret = token.strip().partition(".")
        if not prefix or not secret:
            raise Unauthenticated("Malformed API key.")
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(api_keys, accounts.c.slug.label("account_slug"))
                    .join(accounts, accounts.c.id == api_keys.c.account_id)
                    .where(api_keys.c.prefix == prefix)
                )
                .mappings()
                .first()
            )
        # Compare a hash even when the prefix is unknown, so timing does not tell which prefixes exist.
        expected = row["secret_hash"] if row else _hash("not-a-key")
        if not hmac.compare_digest(expected, _hash(secret)) or row is None:
            raise Unauthenticated("Invalid API key.")
        if row["revoked_at"] is not None:
            raise Unauthenticated("This API key was revoked.")
        now = utcnow()
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise Unauthenticated("This API key has expired.")
        last_used = row["last_used_at"]
        if last_used is None or now - last_used > LAST_USED_RESOLUTION:
            self.touch(row["id"])  # at most one write per key per minute, not one per request
        project_roles: dict[int, str] | None = None
        if row["project_id"] is not None:
            with self.db.read() as conn:
                extra = conn.execute(
                    select(memberships.c.project_id, memberships.c.role).where(
                        memberships.c.key_id == row["id"]
                    )
                )
                project_roles = {r.project_id: r.role for r in extra}
            project_roles[row["project_id"]] = row["role"]
        principal = Principal(
            row["id"],
            row["prefix"],
            row["name"],
            row["account_id"],
            row["account_slug"],
            row["role"],
            row["project_id"],
            project_roles,
        )
        return principal, row["expires_at"]

    def touch(self, key_id: int) -> None:
        with self.db.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=utcnow()))

    def projects(self, account_id: int, project_ids: frozenset[int] | None) -> list[RowMapping]:
        with self.db.read() as conn:
            query = select(projects).where(projects.c.account_id == account_id)
            if project_ids is not None:
                query = query.where(projects.c.id.in_(sorted(project_ids)))
            return list(conn.execute(query.order_by(projects.c.id)).mappings())

    def project_by_slug(self, account_id: int, slug: str) -> int:
        with self.db.read() as conn:
            found = conn.execute(
                select(projects.c.id).where(projects.c.account_id == account_id, projects.c.slug == slug)
            ).scalar()
        if found is None:
            raise NotFound(f"Project {slug!r} not found.")
        return int(found)

    def key_names(self, account_id: int, prefixes: set[str]) -> dict[str, str]:
        """Public prefix -> key name, for the keys of one account (who submitted which job)."""
        if not prefixes:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(api_keys.c.prefix, api_keys.c.name).where(
                    api_keys.c.account_id == account_id, api_keys.c.prefix.in_(sorted(prefixes))
                )
            )
            return {r.prefix: r.name for r in rows}

    def prefixes_named(self, account_id: int, name: str) -> list[str]:
        """Prefixes of the account's keys with this name (Modzy's `user` history filter)."""
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(api_keys.c.prefix).where(
                        api_keys.c.account_id == account_id, api_keys.c.name == name
                    )
                ).scalars()
            )
