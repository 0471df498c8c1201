"""Conditional GETs (RFC 9110 §8.8.3, §13.1.2): weak ETags and ``If-None-Match`` -> 304.

The job reads (detail, items, history; Modzy's job) tag their answers from data that changes on
every visible write, not from the body: a job row's ``version`` (bumped by every UPDATE of the
row, store/tables.py) and its newest log id, plus what else shapes the body (the URL with its
host and query, the caller's permissions, the server's version). A 304 is then decided from one
small indexed read, without building or serialising the body.

The tags are **weak** (``W/"…"``): they name a state of the job, not a byte sequence (the same
state could be serialised differently by another server version or content coding), and
``If-None-Match`` uses the weak comparison anyway. Every answer, 200 or 304, carries
``Cache-Control: no-cache``: a client may keep the body but must revalidate before reusing it.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeVar

from fastapi import Request, Response

from conveyor import __version__

CACHE_CONTROL = "no-cache"
R = TypeVar("R", bound=Response)
_ENTITY_TAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')

# The OpenAPI entry of the 304 on the routes that answer one.
NOT_MODIFIED_DOC: dict[int | str, dict[str, object]] = {
    304: {
        "description": "Not Modified: the `If-None-Match` header named the current `ETag` (or was "
        "`*`). No body; the `ETag` and `Cache-Control` headers are sent again.",
        "content": {},
    }
}


def make_etag(*parts: object) -> str:
    """A weak entity tag over ``parts`` (their ``repr``, which must be deterministic)."""
    digest = hashlib.blake2b(repr((__version__, *parts)).encode(), digest_size=12).hexdigest()
    return f'W/"{digest}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison) or is ``*``.

    A malformed header matches nothing: the client gets the full answer.
    """
    if not if_none_match:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True  # the resource exists (a missing one was answered 404 before this)
    wanted = etag.removeprefix("W/")
    pos = 0
    while pos < len(value):
        found = _ENTITY_TAG.match(value, pos)
        if found is None:
            return False
        if found.group(1) == wanted:
            return True
        pos = found.end()
    return False


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 if the request's ``If-None-Match`` names ``etag``; None otherwise."""
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    return None


def tagged(response: R, etag: str) -> R:
    """``response`` with its ``ETag`` and ``Cache-Control`` headers."""
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
