"""Turn input descriptors into bytes at submit: inline kinds are decoded, references fetched.

Every kind ends as a :class:`DecodedInput` whose ``kind`` is what a pipeline sees: ``text``
(UTF-8) or ``base64`` (raw bytes). Inputs given by reference (``url``, ``s3``, uploaded files,
collection items) carry their origin in ``source``. Fetching happens at submit, before the
job's transaction, so a bad reference is a 4xx naming the input and nothing is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from conveyor.errors import InvalidInput, TooLarge
from conveyor.inputs import url
from conveyor.inputs.inline import INLINE_KINDS, DecodedInput, decode
from conveyor.inputs.upload import StagedFile
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.inputs.s3 import S3Credentials, S3Source

BINARY = "base64"  # the item kind of raw bytes, whatever way they arrived
REFERENCE_KINDS = ("url", "s3")
INPUT_KINDS = (*INLINE_KINDS, *REFERENCE_KINDS)


class InputResolver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url_policy = url.UrlPolicy.of(settings)
        self._s3: S3Source | None = None

    def resolve(self, index: int, name: str | None, kind: str, data: str) -> Iterator[DecodedInput]:
        """One descriptor's inputs (an ``s3://bucket/prefix/`` gives one per object)."""
        if kind in INLINE_KINDS:
            yield decode(index, name, kind, data, max_bytes=self.settings.max_input_bytes)
        elif kind == "url":
            label = name or last_segment(data) or f"input-{index}"
            yield DecodedInput(label, BINARY, url.fetch(data, label, self.url_policy), source=data)
        elif kind == "s3":
            yield from self.s3().resolve(index, name, data)
        else:
            raise InvalidInput(
                f"Input {name or index!r} has unknown kind {kind!r}; use one of {', '.join(INPUT_KINDS)}.",
                input=name or index,
            )

    def staged(self, file: StagedFile) -> DecodedInput:
        if file.size > self.settings.max_input_bytes:  # the upload parser stops earlier; belt and braces
            raise TooLarge(f"File {file.name!r} is over the {self.settings.max_input_bytes}-byte cap.")
        return DecodedInput(file.name, BINARY, file.path.read_bytes(), source=f"upload:{file.name}")

    def with_s3_credentials(self, credentials: S3Credentials) -> InputResolver:
        """A resolver for one request, whose S3 inputs are fetched with that request's credentials."""
        from conveyor.inputs.s3 import S3Source

        scoped = InputResolver(self.settings)
        scoped._s3 = S3Source(self.settings, credentials)
        return scoped

    def s3(self) -> S3Source:
        if self._s3 is None:
            from conveyor.inputs.s3 import S3Source  # boto3 is optional: imported on first use

            self._s3 = S3Source(self.settings)
        return self._s3


def as_pipeline_kind(decoded: DecodedInput, accepted: set[str], pipeline: str) -> DecodedInput:
    """``decoded`` with a kind the pipeline accepts, or a 400 naming the input.

    Bytes go to a text-only pipeline as text when they are UTF-8 (an uploaded .txt file, say).
    """
    if decoded.kind in accepted:
        return decoded
    if decoded.kind == BINARY and "text" in accepted and (decoded.ref is not None or decoded.error):
        # Read by a worker later: it checks then that the bytes are UTF-8 text.
        return dataclasses.replace(decoded, kind="text")
    if decoded.kind == BINARY and "text" in accepted:
        try:
            decoded.data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return dataclasses.replace(decoded, kind="text")
    raise InvalidInput(
        f"Pipeline {pipeline!r} accepts inputs of kind {', '.join(sorted(accepted))}; "
        f"input {decoded.name!r} is {decoded.kind!r}.",
        input=decoded.name,
    )


def last_segment(address: str) -> str:
    """The last part of a URL's path (an item's default name)."""
    return urlsplit(address).path.rstrip("/").rsplit("/", 1)[-1]
