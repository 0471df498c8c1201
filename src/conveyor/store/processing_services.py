"""Processing-service rows: remote HTTP services an account registered, with their last check."""

from __future__ import annotations

import secrets
from contextlib import suppress
from typing import Any

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.clock import utcnow
from conveyor.errors import Conflict, NotFound
from conveyor.store.database import Database
from conveyor.store.tables import processing_services, server_secrets


class ProcessingServiceRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._secrets: dict[str, str] = {}

    def create(self, account_id: int, name: str, endpoint_url: str, description: str, **check: Any) -> int:
        now = utcnow()
        try:
            with self.db.write() as conn:
                return int(
                    conn.execute(
                        insert(processing_services)
                        .values(
                            account_id=account_id,
                            name=name,
                            endpoint_url=endpoint_url,
                            description=description,
                            created_at=now,
                            updated_at=now,
                            **check,
                        )
                        .returning(processing_services.c.id)
                    ).scalar_one()
                )
        except IntegrityError:
            raise Conflict(
                f"A processing service named {name!r} is already registered; choose another name.", name=name
            ) from None

    def record_check(self, service_id: int, **check: Any) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(processing_services)
                .where(processing_services.c.id == service_id)
                .values(updated_at=utcnow(), **check)
            )

    def list(self, account_id: int) -> list[RowMapping]:
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(processing_services)
                    .where(processing_services.c.account_id == account_id)
                    .order_by(processing_services.c.id)
                ).mappings()
            )

    def get(self, account_id: int, service_id: int) -> RowMapping:
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(processing_services).where(
                        processing_services.c.account_id == account_id, processing_services.c.id == service_id
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"Processing service {service_id} not found.", service_id=service_id)
        return row

    def by_name(self, name: str, account_id: int | None = None) -> RowMapping | None:
        """The service called ``name`` (of that account, when given)."""
        query = select(processing_services).where(processing_services.c.name == name)
        if account_id is not None:
            query = query.where(processing_services.c.account_id == account_id)
        with self.db.read() as conn:
            return conn.execute(query).mappings().first()

    def delete(self, account_id: int, service_id: int) -> None:
        with self.db.write() as conn:
            gone = conn.execute(
                delete(processing_services).where(
                    processing_services.c.account_id == account_id, processing_services.c.id == service_id
                )
            ).rowcount
        if gone != 1:
            raise NotFound(f"Processing service {service_id} not found.", service_id=service_id)

    def secret(self, name: str) -> str:
        """A server-wide random secret, made on first use and the same for every process after."""
        if name in self._secrets:
            return self._secrets[name]
        query = select(server_secrets.c.value).where(server_secrets.c.name == name)
        with self.db.read() as conn:
            value = conn.execute(query).scalar()
        if value is not None:
            self._secrets[name] = str(value)
            return self._secrets[name]
        with suppress(IntegrityError), self.db.write() as conn:  # lost a race: read the winner's below
            conn.execute(
                insert(server_secrets).values(name=name, value=secrets.token_hex(32), created_at=utcnow())
            )
        with self.db.read() as conn:
            self._secrets[name] = str(conn.execute(query).scalar_one())
        return self._secrets[name]
