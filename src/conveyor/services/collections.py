"""Collection use cases: create, fill (inline, URL, S3 or uploaded inputs), list, delete; and
the stored inputs a job runs over (a sample of a collection, or one stored item)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from conveyor.domain.access import Principal, require_write
from conveyor.errors import InvalidInput, TooLarge
from conveyor.inputs.inline import DecodedInput
from conveyor.inputs.resolve import InputResolver
from conveyor.inputs.upload import StagedFile
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.collections import CollectionScope


def collection_scope(principal: Principal) -> CollectionScope:
    return CollectionScope(principal.account_id, principal.project_id)


@dataclass(frozen=True)
class StoredSource:
    """The stored inputs a job runs over, and what the job records about them."""

    inputs: list[DecodedInput]
    project_id: int
    job_values: dict[str, Any]


class CollectionService:
    def __init__(self, store: Store, settings: Settings, resolver: InputResolver) -> None:
        self.store = store
        self.settings = settings
        self.resolver = resolver

    # ---------------------------------------------------------------- writes
    def create(self, principal: Principal, name: str, project_id: int, description: str = "") -> int:
        require_write(principal)
        return self.store.collections.create(collection_scope(principal), project_id, name, description)

    def delete(self, principal: Principal, collection_id: int) -> None:
        require_write(principal)
        self.store.collections.delete(collection_scope(principal), collection_id)

    def add(
        self,
        principal: Principal,
        collection_id: int,
        specs: Sequence[dict[str, Any]],
        files: Sequence[StagedFile] = (),
    ) -> list[int]:
        """Fetch or decode every input, check the caps, then store them all in one transaction."""
        require_write(principal)
        scope = collection_scope(principal)
        self.store.collections.get(scope, collection_id)  # 404 before any fetching
        if not specs and not files:
            raise InvalidInput("Nothing to add: give `inputs` or files.")
        rows: list[dict[str, Any]] = []
        total = 0
        for decoded in self._decode(specs, files):
            if len(rows) >= self.settings.max_inputs_per_job:
                raise TooLarge(f"More than {self.settings.max_inputs_per_job} inputs in one request.")
            total += len(decoded.data)
            if total > self.settings.job_bytes_cap:
                raise TooLarge(
                    f"The inputs exceed the cap of {self.settings.job_bytes_cap} bytes per request."
                )
            rows.append(
                {
                    "name": decoded.name,
                    "kind": decoded.kind,
                    "byte_size": len(decoded.data),
                    "data": decoded.data,
                    "source": decoded.source,
                }
            )
        return self.store.collections.add_items(scope, collection_id, rows)

    def _decode(self, specs: Sequence[dict[str, Any]], files: Sequence[StagedFile]) -> Iterator[DecodedInput]:
        for index, spec in enumerate(specs):
            yield from self.resolver.resolve(index, spec.get("name"), spec["kind"], spec["data"])
        for staged in files:
            yield self.resolver.staged(staged)

    # ----------------------------------------------------------------- reads
    def get(self, principal: Principal, collection_id: int) -> RowMapping:
        return self.store.collections.get(collection_scope(principal), collection_id)

    def page(
        self, principal: Principal, *, project_id: int | None, limit: int, offset: int
    ) -> tuple[int, list[RowMapping]]:
        return self.store.collections.page(
            collection_scope(principal), project_id=project_id, limit=limit, offset=offset
        )

    def items(
        self, principal: Principal, collection_id: int, *, after_id: int, limit: int
    ) -> tuple[int, list[RowMapping]]:
        return self.store.collections.items(
            collection_scope(principal), collection_id, after_id=after_id, limit=limit
        )

    def item(self, principal: Principal, item_id: int) -> RowMapping:
        return self.store.collections.item(collection_scope(principal), item_id)

    # ------------------------------------------------------------ job sources
    def job_source(
        self,
        principal: Principal,
        *,
        collection_id: int | None,
        method: str,
        limit: int | None,
        item_id: int | None,
    ) -> StoredSource:
        """The inputs of a job over a collection (sampled) or over one stored item."""
        scope = collection_scope(principal)
        if collection_id is not None:
            collection, rows = self.store.collections.sample(
                scope,
                collection_id,
                method=method,
                limit=limit,
                max_items=self.settings.max_inputs_per_job,
                max_bytes=self.settings.job_bytes_cap,
            )
            if not rows:
                raise InvalidInput(f"Collection {collection_id} has no items to run over.")
            return StoredSource(
                [_decoded(row) for row in rows],
                collection["project_id"],
                {
                    "source_collection_id": collection_id,
                    "source_collection": {"id": collection_id, "name": collection["name"], "method": method},
                },
            )
        assert item_id is not None
        row = self.store.collections.item(scope, item_id, with_data=True)
        collection = self.store.collections.get(scope, row["collection_id"])
        return StoredSource(
            [_decoded(row)],
            collection["project_id"],
            {
                "source_item": {"id": item_id, "name": row["name"], "collection_id": row["collection_id"]},
            },
        )


def _decoded(row: RowMapping) -> DecodedInput:
    return DecodedInput(
        row["name"], row["kind"], bytes(row["data"]), source=f"collection:{row['collection_id']}/{row['id']}"
    )
