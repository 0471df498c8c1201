"""Collection repository: named sets of stored inputs in a project, and the sampling of them.

A stored item's bytes are in the blob store (``ref`` = ``blob:<key>``, ``data`` empty) unless
they are tiny (``CONVEYOR_BLOB_INLINE_BYTES``): then they stay in ``data``. Jobs over a
collection refer to its items (``collection-item:<id>``) and read them with :meth:`item_bytes`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from conveyor.blobs import BlobStore, is_blob_ref
from conveyor.clock import utcnow
from conveyor.domain.status import ACTIVE
from conveyor.errors import Conflict, InvalidInput, NotFound, TooLarge
from conveyor.store.database import Database
from conveyor.store.tables import collection_items, collections, jobs, projects

# How a job picks items from a collection (Antenna's collection "method", without its events).
SAMPLING_METHODS = ("all", "first", "random", "last_and_random")
ITEM_INSERT_BATCH = 1000


@dataclass(frozen=True)
class CollectionScope:
    """Which collections a caller may see: one account, optionally one project."""

    account_id: int
    project_id: int | None = None

    def clauses(self) -> list[Any]:
        out: list[Any] = [collections.c.account_id == self.account_id]
        if self.project_id is not None:
            out.append(collections.c.project_id == self.project_id)
        return out


def sample_ids(ids: Sequence[int], method: str, limit: int | None, rng: random.Random) -> list[int]:
    """The item ids (oldest first in ``ids``) a job over the collection runs on.

    ``all``: every item, or the first ``limit``; ``first``: the first ``limit`` (default 1);
    ``random``: ``limit`` items at random (default all, in random order); ``last_and_random``:
    the newest item, then random others up to ``limit`` (default all).
    """
    if method not in SAMPLING_METHODS:
        raise InvalidInput(f"Unknown sampling method {method!r}; use one of {', '.join(SAMPLING_METHODS)}.")
    if method == "all":
        return list(ids[:limit] if limit is not None else ids)
    if method == "first":
        return list(ids[: limit or 1])
    count = len(ids) if limit is None else min(limit, len(ids))
    if method == "random":
        return rng.sample(list(ids), count)
    if not ids or count == 0:
        return []
    newest, rest = ids[-1], list(ids[:-1])
    return [newest, *rng.sample(rest, count - 1)]


class CollectionRepository:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # ----------------------------------------------------------------- collections
    def create(self, scope: CollectionScope, project_id: int, name: str, description: str) -> int:
        now = utcnow()
        with self.db.write() as conn:
            owner = conn.execute(select(projects.c.account_id).where(projects.c.id == project_id)).scalar()
            if owner != scope.account_id or scope.project_id not in (None, project_id):
                raise NotFound(f"Project {project_id} not found.")
            collection_id: int = conn.execute(
                insert(collections)
                .values(
                    account_id=scope.account_id,
                    project_id=project_id,
                    name=name,
                    description=description,
                    created_at=now,
                    updated_at=now,
                )
                .returning(collections.c.id)
            ).scalar_one()
        return collection_id

    def get(self, scope: CollectionScope, collection_id: int) -> RowMapping:
        with self.db.read() as conn:
            rows = self._rows(conn, [collections.c.id == collection_id, *scope.clauses()])
        if not rows:
            raise NotFound(f"Collection {collection_id} not found.", collection_id=collection_id)
        return rows[0]

    def page(
        self, scope: CollectionScope, *, project_id: int | None, limit: int, offset: int
    ) -> tuple[int, list[RowMapping]]:
        where = scope.clauses()
        if project_id is not None:
            where.append(collections.c.project_id == project_id)
        with self.db.read() as conn:
            count = conn.execute(select(func.count()).select_from(collections).where(*where)).scalar_one()
            rows = self._rows(conn, where, limit=limit, offset=offset)
        return count, rows

    def delete(self, scope: CollectionScope, collection_id: int) -> None:
        """Delete the collection and its items; refused while an unfinished job runs over it."""
        with self.db.write() as conn:
            self._require(conn, scope, collection_id)
            running = conn.execute(
                select(jobs.c.id)
                .where(
                    jobs.c.source_collection_id == collection_id,
                    jobs.c.status.in_(sorted(s.value for s in ACTIVE)),
                )
                .limit(1)
            ).scalar()
            if running is not None:
                raise Conflict(
                    f"Collection {collection_id} is used by unfinished job {running}; "
                    "cancel it or wait for it to finish.",
                    job_id=running,
                )
            conn.execute(delete(collection_items).where(collection_items.c.collection_id == collection_id))
            conn.execute(delete(collections).where(collections.c.id == collection_id))

    # ----------------------------------------------------------------- items
    def add_items(
        self, scope: CollectionScope, collection_id: int, rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        """Store items (``name, kind, byte_size, data, source`` and, for blob-stored bytes, ``ref,
        sha256`` with empty ``data``) in one transaction; their ids."""
        now = utcnow()
        ids: list[int] = []
        with self.db.write() as conn:
            self._require(conn, scope, collection_id)
            for row in rows:  # one by one for the ids; collection uploads are small next to job writes
                ids.append(
                    conn.execute(
                        insert(collection_items)
                        .values(collection_id=collection_id, created_at=now, **row)
                        .returning(collection_items.c.id)
                    ).scalar_one()
                )
            conn.execute(update(collections).where(collections.c.id == collection_id).values(updated_at=now))
        return ids

    def items(
        self, scope: CollectionScope, collection_id: int, *, after_id: int, limit: int
    ) -> tuple[int, list[RowMapping]]:
        columns = [c for c in collection_items.c if c.name != "data"]
        where = [collection_items.c.collection_id == collection_id]
        with self.db.read() as conn:
            self._require(conn, scope, collection_id)
            count = conn.execute(
                select(func.count()).select_from(collection_items).where(*where)
            ).scalar_one()
            rows = conn.execute(
                select(*columns)
                .where(*where, collection_items.c.id > after_id)
                .order_by(collection_items.c.id)
                .limit(limit)
            ).mappings()
            return count, list(rows)

    def item_bytes(self, item_id: int, max_bytes: int | None = None) -> bytes | None:
        """A stored item's bytes, from its row or its blob; None when the item is gone (its
        collection was deleted). A blob missing from the store is ``InputUnavailable``; one
        over ``max_bytes`` is ``TooLarge``. No scope: for workers and signed media URLs."""
        with self.db.read() as conn:
            row = conn.execute(
                select(collection_items.c.data, collection_items.c.ref).where(
                    collection_items.c.id == item_id
                )
            ).first()
        if row is None:
            return None
        if is_blob_ref(row.ref):
            return self.blobs.read(row.ref, max_bytes)
        data = bytes(row.data)
        if max_bytes is not None and len(data) > max_bytes:
            raise TooLarge(f"Stored item {item_id} is {len(data)} bytes, over the {max_bytes}-byte cap.")
        return data

    def item(self, scope: CollectionScope, item_id: int, *, with_data: bool = False) -> RowMapping:
        columns = [c for c in collection_items.c if with_data or c.name != "data"]
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(*columns)
                    .join(collections, collections.c.id == collection_items.c.collection_id)
                    .where(collection_items.c.id == item_id, *scope.clauses())
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"Stored item {item_id} not found.", item_id=item_id)
        return row

    def sample(
        self,
        scope: CollectionScope,
        collection_id: int,
        *,
        method: str,
        limit: int | None,
        max_items: int,
        max_bytes: int,
        rng: random.Random | None = None,
    ) -> tuple[RowMapping, list[RowMapping]]:
        """The collection and the items (without their bytes) a job over it runs on, in job order.

        The caps are checked on the chosen items' sizes before any bytes are read.
        """
        with self.db.read() as conn:
            rows = self._rows(conn, [collections.c.id == collection_id, *scope.clauses()])
            if not rows:
                raise NotFound(f"Collection {collection_id} not found.", collection_id=collection_id)
            sizes = dict(
                conn.execute(
                    select(collection_items.c.id, collection_items.c.byte_size)
                    .where(collection_items.c.collection_id == collection_id)
                    .order_by(collection_items.c.id)
                ).all()
            )
            chosen = sample_ids(list(sizes), method, limit, rng or random.Random())
            if len(chosen) > max_items:
                raise TooLarge(
                    f"The job would run over {len(chosen)} items of collection {collection_id}, more than "
                    f"the cap of {max_items} per job; pass a `limit`."
                )
            total = sum(sizes[i] for i in chosen)
            if total > max_bytes:
                raise TooLarge(
                    f"The chosen items of collection {collection_id} hold {total} bytes, over the cap of "
                    f"{max_bytes} per job; pass a smaller `limit`."
                )
            by_id: dict[int, RowMapping] = {}
            for first in range(0, len(chosen), ITEM_INSERT_BATCH):
                batch = chosen[first : first + ITEM_INSERT_BATCH]
                columns = [c for c in collection_items.c if c.name != "data"]
                for row in conn.execute(select(*columns).where(collection_items.c.id.in_(batch))).mappings():
                    by_id[row["id"]] = row
        return rows[0], [by_id[i] for i in chosen if i in by_id]

    # ----------------------------------------------------------------- helpers
    def _require(self, conn: Connection, scope: CollectionScope, collection_id: int) -> None:
        found = conn.execute(
            select(collections.c.id).where(collections.c.id == collection_id, *scope.clauses())
        ).first()
        if found is None:
            raise NotFound(f"Collection {collection_id} not found.", collection_id=collection_id)

    @staticmethod
    def _rows(
        conn: Connection, where: Sequence[Any], *, limit: int | None = None, offset: int = 0
    ) -> list[RowMapping]:
        stats = (
            select(
                collection_items.c.collection_id,
                func.count().label("item_count"),
                func.coalesce(func.sum(collection_items.c.byte_size), 0).label("byte_size"),
            )
            .group_by(collection_items.c.collection_id)
            .subquery()
        )
        query = (
            select(
                collections,
                projects.c.name.label("project_name"),
                func.coalesce(stats.c.item_count, 0).label("item_count"),
                func.coalesce(stats.c.byte_size, 0).label("byte_size"),
            )
            .join(projects, projects.c.id == collections.c.project_id)
            .outerjoin(stats, stats.c.collection_id == collections.c.id)
            .where(*where)
            .order_by(collections.c.id.desc())
            .offset(offset)
        )
        if limit is not None:
            query = query.limit(limit)
        return list(conn.execute(query).mappings())
