"""Shared pieces of the native ``/api/v2`` schemas: database integer bounds, ``SmallInt``, inline
inputs, references to other objects, and the page envelope.

The job schemas are in schemas/jobs.py, pipelines and projects in schemas/catalog.py, collections
in schemas/collections.py; the Modzy dialect (with its status names) in schemas/modzy.py.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

#: Ids and positions of the big tables (jobs, items, logs, events) are 64-bit integers in the
#: database; those of accounts, projects, pipelines and collections, and item positions (`seq`),
#: are 32-bit on PostgreSQL. A bigger number in a path, query or body is a 422 at the edge, never
#: an overflow inside the driver (found by schemathesis).
DB_INT_MAX = 2**63 - 1
DB_INT32_MAX = 2**31 - 1

#: An id or count the database stores as a 32-bit integer: anything bigger is a 422 at the edge.
SmallInt = Annotated[int, Field(ge=-DB_INT32_MAX - 1, le=DB_INT32_MAX)]


class InputIn(TypedDict):
    """One inline input. A TypedDict, not a model: a job may carry a million of them, and
    validating plain dicts is several times faster than building model instances."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    kind: Annotated[
        Literal["text", "base64", "url", "s3", "manifest"],
        Field(
            description="`text` (UTF-8), `base64` (raw or `data:` URI), `url` (`http(s)://`), `s3` "
            "(`s3://bucket/key`, or `s3://bucket/prefix/` for every object under it) or `manifest` (a list "
            'of references: JSONL `{"uri", "name"?}` lines, CSV with a `uri` column, or one URI a '
            "line; given inline or as the `http(s)://` / `s3://` address of the manifest). References "
            "are stored as references and read by the workers (unless the job says `fetch: at_submit`); "
            "S3 prefixes and manifests at an address are listed by the job's `collect` stage."
        ),
    ]
    data: Annotated[
        str,
        Field(description="The text, the base64-encoded bytes, the URL, the S3 address or the manifest."),
    ]
    format: NotRequired[
        Annotated[
            Literal["jsonl", "csv", "text"] | None,
            Field(description="A manifest's format; default: from its name or first line."),
        ]
    ]
    name: NotRequired[
        Annotated[
            str | None,
            Field(
                max_length=500,
                description="Item name; default: the URL's or key's last part, or `input-<n>`.",
            ),
        ]
    ]


class Ref(BaseModel):
    id: int
    name: str
    details: str
    user_permissions: list[str] = []


class CollectionRef(BaseModel):
    id: int
    name: str
    details: str
    method: str
    user_permissions: list[str] = []


class StoredItemRef(BaseModel):
    id: int
    name: str
    details: str
    collection_id: int
    user_permissions: list[str] = []


class PipelineRef(BaseModel):
    id: int
    details: str
    name: str
    slug: str
    description: str
    version: int
    version_name: str
    created_at: str | None
    updated_at: str | None
    user_permissions: list[str] = []


class Page(BaseModel):
    count: int
    next: str | None
    previous: str | None
