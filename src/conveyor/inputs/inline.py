"""Inline inputs: ``text`` (UTF-8) and ``base64`` (optionally a ``data:`` URI, as Modzy's embedded input)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from conveyor.errors import InvalidInput, TooLarge

INLINE_KINDS = ("text", "base64")


@dataclass(frozen=True)
class DecodedInput:
    name: str
    kind: str
    data: bytes
    source: str | None = None  # where the bytes came from (a URL, an S3 key, a file name)
    #: Inputs by reference: where a worker reads the bytes (``data`` is then empty), and the
    #: size a listing declared (0 when unknown).
    ref: str | None = None
    size: int = 0
    error: str | None = None  # a manifest line that is not an input: its item fails with this


def decode(index: int, name: str | None, kind: str, data: str, *, max_bytes: int) -> DecodedInput:
    label = name or f"input-{index}"
    if kind == "text":
        raw = data.encode("utf-8")
    elif kind == "base64":
        payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
        if len(payload) > (max_bytes * 4) // 3 + 4:
            raise TooLarge(f"Input {label!r} is larger than the {max_bytes}-byte cap per input.", input=label)
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"Input {label!r} is not valid base64.", input=label) from None
    else:
        raise InvalidInput(
            f"Input {label!r} has unknown kind {kind!r}; use one of {', '.join(INLINE_KINDS)}.", input=label
        )
    if len(raw) > max_bytes:
        raise TooLarge(
            f"Input {label!r} is {len(raw)} bytes, over the {max_bytes}-byte cap per input.", input=label
        )
    return DecodedInput(label, kind, raw)
