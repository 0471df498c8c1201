"""Inputs stored by Conveyor itself, read back by reference: ``blob:<key>`` (the blob store: bytes
that came with a request) and ``collection-item:<id>`` (an item of a stored collection).

Workers and the signed media route read an item's bytes through :func:`read` when its row
holds a ref instead of ``data``. A ref whose bytes are gone (the job's blobs or the collection
were deleted) is ``InputUnavailable``: that item fails, the job goes on.
"""

from __future__ import annotations

from conveyor.blobs import is_blob_ref
from conveyor.errors import InputUnavailable, InvalidInput
from conveyor.store import Store

COLLECTION_ITEM = "collection-item:"


def collection_item_ref(item_id: int) -> str:
    return f"{COLLECTION_ITEM}{item_id}"


def is_stored(ref: str | None) -> bool:
    """Whether ``ref`` points into Conveyor's own storage (as opposed to http(s):// or s3://)."""
    return ref is not None and (is_blob_ref(ref) or ref.startswith(COLLECTION_ITEM))


def read(store: Store, ref: str, max_bytes: int | None = None) -> bytes:
    """The bytes behind a stored ref (``TooLarge`` over ``max_bytes``)."""
    if is_blob_ref(ref):
        return store.blobs.read(ref, max_bytes)
    if ref.startswith(COLLECTION_ITEM):
        raw_id = ref[len(COLLECTION_ITEM) :]
        if not raw_id.isdigit():
            raise InvalidInput(f"Invalid stored item reference {ref!r}.")
        data = store.collections.item_bytes(int(raw_id), max_bytes)
        if data is None:
            raise InputUnavailable(
                f"Stored item {raw_id} no longer exists (it or its collection was deleted).", ref=ref
            )
        return data
    raise InvalidInput(f"{ref!r} is not a reference to stored bytes (blob: or collection-item:).")
