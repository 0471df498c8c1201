"""Collection use cases: create, fill (inline, URL, S3 or uploaded inputs), list, delete; and
the stored inputs a job runs over (a sample of a collection, or one stored item).

Stored bytes go to the blob store under ``collections/<id>/`` (tiny ones, up to
``CONVEYOR_BLOB_INLINE_BYTES``, stay in the row); deleting the collection deletes them. A job
over stored items copies no bytes: each of its items refers to one (``collection-item:<id>``)
and a worker reads it when it gets there, so an item deleted meanwhile fails that job item
with ``input_unavailable``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from conveyor.domain.access import Principal, require_write
from conveyor.errors import InvalidInput, TooLarge
from conveyor.inputs.inline import DecodedInput
from conveyor.inputs.resolve import BINARY, InputResolver, as_pipeline_kind
from conveyor.inputs.stored import collection_item_ref
from conveyor.inputs.upload import StagedFile
from conveyor.pipelines.base import Pipeline
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.collections import CollectionScope

log = logging.getLogger(__name__)


def collection_scope(principal: Principal) -> CollectionScope:
    return CollectionScope(principal.account_id, principal.project_id)


def blob_prefix(collection_id: int) -> str:
    """Where a collection's stored bytes live in the blob store."""
    return f"collections/{collection_id}"


@dataclass(frozen=True)
class StoredSource:
    """The stored items (rows without their bytes) a job runs over, and what the job records."""

    items: list[RowMapping]
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
        """Delete the collection's rows, then (once that committed) its blobs."""
        require_write(principal)
        self.store.collections.delete(collection_scope(principal), collection_id)
        self._delete_blobs(blob_prefix(collection_id))

    def _delete_blobs(self, prefix: str) -> None:
        try:
            self.store.blobs.delete_prefix(prefix)
        except Exception:  # the rows are gone; a blob left behind is only disk, logged
            log.exception("deleting blobs under %s failed", prefix)

    def add(
        self,
        principal: Principal,
        collection_id: int,
        specs: Sequence[dict[str, Any]],
        files: Sequence[StagedFile] = (),
    ) -> list[int]:
        """Fetch or decode every input, check the caps and write its bytes to the blob store, then
        store the rows in one transaction. On any failure the request's blobs are deleted."""
        require_write(principal)
        scope = collection_scope(principal)
        self.store.collections.get(scope, collection_id)  # 404 before any fetching
        if not specs and not files:
            raise InvalidInput("Nothing to add: give `inputs` or files.")
        if len(specs) + len(files) > self.settings.max_inputs_per_job:
            raise TooLarge(f"More than {self.settings.max_inputs_per_job} inputs in one request.")
        request_prefix = f"{blob_prefix(collection_id)}/{uuid.uuid4().hex}"
        try:
            rows = self._stored_rows(request_prefix, specs, files)
            return self.store.collections.add_items(scope, collection_id, rows)
        except BaseException:
            self._delete_blobs(request_prefix)
            raise

    def _stored_rows(
        self, prefix: str, specs: Sequence[dict[str, Any]], files: Sequence[StagedFile]
    ) -> list[dict[str, Any]]:
        blobs = self.store.blobs
        rows: list[dict[str, Any]] = []
        total = 0

        def count(size: int) -> None:
            nonlocal total
            if len(rows) >= self.settings.max_inputs_per_job:
                raise TooLarge(f"More than {self.settings.max_inputs_per_job} inputs in one request.")
            total += size
            if total > self.settings.job_bytes_cap:
                raise TooLarge(
                    f"The inputs exceed the cap of {self.settings.job_bytes_cap} bytes per request."
                )

        for decoded in self._decode(specs):
            count(len(decoded.data))
            row = {"name": decoded.name, "kind": decoded.kind, "byte_size": len(decoded.data)}
            if len(decoded.data) <= self.settings.blob_inline_bytes:
                row["data"] = decoded.data
            else:
                stored = blobs.put(f"{prefix}/{len(rows)}", decoded.data)
                row.update(data=b"", ref=stored.ref, sha256=stored.sha256)
            rows.append({**row, "source": decoded.source})
        for staged in files:  # streamed from the temporary file to the store, never read whole
            if staged.size > self.settings.max_input_bytes:  # the upload parser stops earlier
                raise TooLarge(f"File {staged.name!r} is over the {self.settings.max_input_bytes}-byte cap.")
            count(staged.size)
            stored = blobs.put_file(f"{prefix}/{len(rows)}", staged.path)
            rows.append(
                {
                    "name": staged.name,
                    "kind": BINARY,
                    "byte_size": stored.size,
                    "data": b"",
                    "ref": stored.ref,
                    "sha256": stored.sha256,
                    "source": f"upload:{staged.name}",
                }
            )
        return rows

    def _decode(self, specs: Sequence[dict[str, Any]]) -> Iterator[DecodedInput]:
        for index, spec in enumerate(specs):
            yield from self.resolver.resolve(index, spec.get("name"), spec["kind"], spec["data"])

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
                rows,
                collection["project_id"],
                {
                    "source_collection_id": collection_id,
                    "source_collection": {"id": collection_id, "name": collection["name"], "method": method},
                },
            )
        assert item_id is not None
        row = self.store.collections.item(scope, item_id)
        collection = self.store.collections.get(scope, row["collection_id"])
        return StoredSource(
            [row],
            collection["project_id"],
            {
                "source_item": {"id": item_id, "name": row["name"], "collection_id": row["collection_id"]},
            },
        )

    def item_rows(
        self, stored: StoredSource, pipeline_cls: type[Pipeline]
    ) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
        """The job's item rows over stored items: references (``collection-item:<id>``), no bytes
        copied; with total bytes and the count per kind. A stored item of bytes goes to a
        text-only pipeline as text when it is UTF-8 (read once, here, to check)."""
        accepted = set(pipeline_cls.input_kinds)
        rows: list[dict[str, Any]] = []
        kinds: dict[str, int] = {}
        total = 0
        for seq, item in enumerate(stored.items):
            kind = item["kind"]
            if kind not in accepted:
                data = self.store.collections.item_bytes(item["id"]) or b""
                kind = as_pipeline_kind(
                    DecodedInput(item["name"], kind, data), accepted, pipeline_cls.slug
                ).kind
            kinds[kind] = kinds.get(kind, 0) + 1
            total += item["byte_size"]
            rows.append(
                {
                    "seq": seq,
                    "name": item["name"],
                    "kind": kind,
                    "byte_size": item["byte_size"],
                    "data": None,
                    "ref": collection_item_ref(item["id"]),
                    "sha256": item["sha256"],
                    "source": f"collection:{item['collection_id']}/{item['id']}",
                    "status": "PENDING",
                    "attempts": 0,
                }
            )
        return rows, total, kinds
