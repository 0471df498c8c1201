"""What a job's ``collect`` stage lists: S3 prefixes and manifests, as pages of entries.

A job's collect plan (``jobs.collect``, built at submit by ``services/submission.py``) names its
sources in order; each is read as a stream and cut into pages of ``page_size`` entries. Each
page comes with the cursor to resume after it (S3: the last key listed, used as
``StartAfter``; a manifest: the lines consumed), which the store commits with the page's items,
so a collect stage taken over after a crash lists exactly what the last one did not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInput
from conveyor.inputs import manifest, url
from conveyor.inputs.manifest import Entry
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.inputs.s3 import S3Credentials, S3Source

S3_PREFIX = "s3_prefix"
MANIFEST = "manifest"


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    cursor: dict[str, Any]  # where the next page starts
    last: bool  # the source has nothing after this page


class Collector:
    def __init__(
        self,
        settings: Settings,
        *,
        credentials: S3Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self._s3: S3Source | None = None
        self.url_policy = url.UrlPolicy.of(settings)

    def s3(self) -> S3Source:
        if self._s3 is None:
            from conveyor.inputs.s3 import S3Source  # boto3 is optional: imported on first use

            self._s3 = S3Source(self.settings, self.credentials)
        return self._s3

    def pages(self, source: dict[str, Any], cursor: dict[str, Any], page_size: int) -> Iterator[Page]:
        """The pages of one source from ``cursor`` on (``{}``: from its start)."""
        if source["type"] == S3_PREFIX:
            yield from self._s3_pages(source, cursor, page_size)
        elif source["type"] == MANIFEST:
            yield from self._manifest_pages(source, cursor, page_size)
        else:
            raise InvalidInput(f"Unknown collect source {source['type']!r}.")

    def _s3_pages(self, source: dict[str, Any], cursor: dict[str, Any], page_size: int) -> Iterator[Page]:
        bucket, prefix, label = source["bucket"], source["prefix"], source["label"]
        after: str | None = cursor.get("after")
        while True:
            keys, after, more = self.s3().list_page(bucket, prefix, after, page_size, label)
            entries = [
                Entry(key.rsplit("/", 1)[-1] or key, f"s3://{bucket}/{key}", size) for key, size in keys
            ]
            yield Page(entries, {"after": after}, last=not more)
            if not more:
                return

    def _manifest_pages(
        self, source: dict[str, Any], cursor: dict[str, Any], page_size: int
    ) -> Iterator[Page]:
        skip = int(cursor.get("lines", 0))
        with self._lines(source["ref"], source["label"]) as lines:
            parsed = manifest.parse(lines, source["format"], skip=skip)
            consumed = skip
            while True:
                taken = list(islice(parsed, page_size))
                if taken:
                    consumed = taken[-1][0]
                entries = [entry for _, entry in taken if entry is not None]
                last = len(taken) < page_size
                yield Page(entries, {"lines": consumed}, last=last)
                if last:
                    return

    def first_line(self, ref: str, label: str) -> str:
        """The first non-blank line of a manifest (read at submit to check that it parses)."""
        with self._lines(ref, label) as lines:
            for raw in lines:
                line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
                if line.strip():
                    return line
        raise InvalidInput(f"Manifest {label!r} is empty.", input=label)

    @contextmanager
    def _lines(self, ref: str, label: str) -> Iterator[Iterator[bytes | str]]:
        if ref.startswith("s3://"):
            from conveyor.inputs.s3 import parse

            bucket, key = parse(ref, label)
            with self.s3().lines(bucket, key, label) as body:
                yield body
        else:
            with url.stream(ref, label, self.url_policy) as response:
                yield response.iter_lines()
