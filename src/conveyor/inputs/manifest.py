"""Manifests: a list of input references, one per line, read by a job's ``collect`` stage.

Three formats, as batch-prediction services take them:

- ``jsonl``: one JSON object a line, ``{"uri": "...", "name": "..."?}`` (``url`` is accepted
  for ``uri``);
- ``csv``: a header row with a ``uri`` (or ``url``) column and optionally ``name``;
- ``text``: one URI a line.

Blank lines and lines starting with ``#`` (text) are skipped. A line that does not parse, or
whose URI is not an ``http(s)://`` URL or an ``s3://bucket/key`` object, is not an error of the
job: it becomes one failed item (``Entry.error``), so one bad line never refuses a million good
ones. Lines are read as a stream; nothing holds the whole manifest in memory.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from conveyor.errors import InvalidInput

FORMATS = ("jsonl", "csv", "text")
URI_KEYS = ("uri", "url")
MAX_LINE_BYTES = 64 * 1024
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Entry:
    """One input listed by a manifest or an S3 prefix: a reference (or why it is not one)."""

    name: str
    ref: str
    size: int = 0  # bytes declared by the listing (S3), 0 when unknown
    error: str | None = None  # a line that is not an input: the item fails with this


def detect_format(first_line: str, hint: str | None = None, filename: str = "") -> str:
    """The manifest's format: the one given, else from the file name, else from its first line."""
    if hint:
        if hint not in FORMATS:
            raise InvalidInput(f"Unknown manifest format {hint!r}; use one of {', '.join(FORMATS)}.")
        return hint
    lowered = filename.lower().split("?", 1)[0]
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"), (".txt", "text")):
        if lowered.endswith(suffix):
            return fmt
    stripped = first_line.strip()
    if stripped.startswith("{"):
        return "jsonl"
    if "," in stripped and any(key in _header(stripped) for key in URI_KEYS):
        return "csv"
    return "text"


def check_first_line(line: str, fmt: str, label: str) -> None:
    """The cheap check made at submit: the manifest's first line is usable (else a 400)."""
    if fmt == "csv":
        if not any(key in _header(line) for key in URI_KEYS):
            raise InvalidInput(f"Manifest {label!r}: the CSV header has no `uri` column.", input=label)
        return
    entry = _parse_line(1, line, fmt)
    if entry is not None and entry.error is not None:
        raise InvalidInput(f"Manifest {label!r}: {entry.error}", input=label)


def parse(lines: Iterable[bytes | str], fmt: str, *, skip: int = 0) -> Iterator[tuple[int, Entry | None]]:
    """``(line number, entry)`` for each line after the first ``skip`` ones (entry None: a line
    that lists nothing, e.g. blank or the CSV header). Line numbers start at 1."""
    numbered = ((n, _text(raw)) for n, raw in enumerate(lines, start=1))
    if fmt == "csv":
        yield from _parse_csv(numbered, skip)
        return
    for number, line in numbered:
        if number > skip:
            yield number, _parse_line(number, line, fmt)


def check_ref(uri: str) -> str | None:
    """Why ``uri`` cannot be an input reference, or None when it can (the cheap, local checks:
    the SSRF guard proper runs when a worker fetches it). String tests, not ``urlsplit``: a
    manifest may hold millions of lines."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key or key.endswith("/"):
            return f"{uri!r} is not an s3://bucket/key object"
        return None
    if not uri.startswith(("http://", "https://")):
        return f"{uri!r} is not an http(s):// URL or an s3://bucket/key object"
    netloc = _netloc(uri)
    if not netloc or netloc.startswith(":") or _SPACE.search(uri):
        return f"{uri!r} is not an http(s):// URL or an s3://bucket/key object"
    if "@" in netloc:
        return "credentials in URLs are not accepted"
    return None


def default_name(uri: str, number: int) -> str:
    """The last path segment of ``uri`` (else ``line-<n>``)."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    path = rest.split("?", 1)[0].split("#", 1)[0]
    _, slash, tail = path.partition("/")
    return (tail.rstrip("/").rsplit("/", 1)[-1] if slash else "") or f"line-{number}"


# ------------------------------------------------------------------------------- internals
def _text(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw


def _header(line: str) -> list[str]:
    return [cell.strip().lower() for cell in next(csv.reader([line]), [])]


def _entry(number: int, uri: object, name: object) -> Entry:
    if not isinstance(uri, str) or not uri.strip():
        return Entry(f"line-{number}", "", error=f"line {number}: no `uri`")
    uri = uri.strip()
    label = name.strip() if isinstance(name, str) and name.strip() else default_name(uri, number)
    problem = check_ref(uri)
    if problem is not None:
        return Entry(label[:500], uri[:2000], error=f"line {number}: {problem}")
    if len(uri) > 2000:
        return Entry(label[:500], "", error=f"line {number}: the URI is longer than 2000 characters")
    return Entry(label[:500], uri)


def _netloc(uri: str) -> str:
    rest = uri.split("://", 1)[1]
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    return rest


def _parse_line(number: int, raw: str, fmt: str) -> Entry | None:
    line = raw.strip()
    if not line or (fmt == "text" and line.startswith("#")):
        return None
    if len(line) > MAX_LINE_BYTES:
        return Entry(f"line-{number}", "", error=f"line {number}: longer than {MAX_LINE_BYTES} bytes")
    if fmt == "text":
        return _entry(number, line, None)
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return Entry(f"line-{number}", "", error=f"line {number}: not JSON ({exc.msg})")
    if not isinstance(value, dict):
        return Entry(f"line-{number}", "", error=f"line {number}: not a JSON object")
    uri = value.get("uri", value.get("url"))
    return _entry(number, uri, value.get("name"))


def _parse_csv(numbered: Iterator[tuple[int, str]], skip: int) -> Iterator[tuple[int, Entry | None]]:
    columns: list[str] | None = None
    for number, line in numbered:
        if columns is None:
            columns = _header(line)
            if number > skip:
                yield number, None
            continue
        if number <= skip:
            continue
        if not line.strip():
            yield number, None
            continue
        cells = next(csv.reader([line]), [])
        row = dict(zip(columns, cells, strict=False))
        uri = next((row[key] for key in URI_KEYS if key in row), None)
        yield number, _entry(number, uri, row.get("name"))
