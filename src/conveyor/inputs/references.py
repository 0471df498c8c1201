"""Inputs by reference at submit: the cheap checks, then a reference item or a collect source.

Nothing is downloaded here. A ``url`` is checked for its scheme, credentials and a literal
non-public address (the full SSRF guard runs at fetch time, on every hop); an ``s3`` object or
prefix costs one call to its bucket (reachable; a prefix must list at least one object); a
``manifest`` given by reference has its first line read to check that it parses, one given
inline is parsed here whole. Items then hold the reference; S3 prefixes and referenced
manifests become sources of the job's ``collect`` stage (``inputs/collect.py``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from conveyor.errors import AddressNotAllowed, InputUnavailable, InvalidInput
from conveyor.inputs import manifest
from conveyor.inputs.collect import MANIFEST, S3_PREFIX, Collector
from conveyor.inputs.inline import INLINE_KINDS, DecodedInput, decode
from conveyor.inputs.resolve import BINARY, InputResolver, last_segment
from conveyor.inputs.url import SCHEMES, is_public

MANIFEST_KIND = "manifest"
REF_SCHEMES = ("http://", "https://", "s3://")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


@dataclass
class Planned:
    """A request's inputs by reference: items to create now, in order, and collect sources."""

    items: list[DecodedInput] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)


class ReferencePlanner:
    def __init__(self, resolver: InputResolver, collector: Collector) -> None:
        self.resolver = resolver
        self.settings = resolver.settings
        self.collector = collector
        self._buckets: set[str] = set()

    def plan(self, specs: list[dict[str, Any]]) -> Planned:
        planned = Planned()
        for index, spec in enumerate(specs):
            name, kind, data = spec.get("name"), spec["kind"], spec["data"]
            if kind in INLINE_KINDS:
                planned.items.append(decode(index, name, kind, data, max_bytes=self.settings.max_input_bytes))
            elif kind == "url":
                planned.items.append(self.url(index, name, data))
            elif kind == "s3":
                self.s3(index, name, data, planned)
            elif kind == MANIFEST_KIND:
                self.manifest(index, name, data, spec.get("format"), planned)
            else:
                kinds = ", ".join((*INLINE_KINDS, "url", "s3", MANIFEST_KIND))
                raise InvalidInput(
                    f"Input {name or index!r} has unknown kind {kind!r}; use one of {kinds}.",
                    input=name or index,
                )
        return planned

    # ------------------------------------------------------------------ kinds
    def url(self, index: int, name: str | None, address: str) -> DecodedInput:
        label = name or last_segment(address) or f"input-{index}"
        check_url(address, label, allow_private=self.settings.allow_private_urls)
        return DecodedInput(label[:500], BINARY, b"", ref=address)

    def s3(self, index: int, name: str | None, address: str, planned: Planned) -> None:
        from conveyor.inputs.s3 import parse

        label = name or address
        bucket, key = parse(address, label)
        if key == "" or key.endswith("/"):
            keys, _, _ = self.collector.s3().list_page(bucket, key, None, 1, label)
            if not keys:
                raise InputUnavailable(f"Input {label!r}: no objects under s3://{bucket}/{key}.", input=label)
            self._buckets.add(bucket)
            planned.sources.append({"type": S3_PREFIX, "bucket": bucket, "prefix": key, "label": label})
            return
        if bucket not in self._buckets:
            self.collector.s3().check_bucket(bucket, label)
            self._buckets.add(bucket)
        item_name = name or key.rsplit("/", 1)[-1] or f"input-{index}"
        planned.items.append(DecodedInput(item_name[:500], BINARY, b"", ref=f"s3://{bucket}/{key}"))

    def manifest(self, index: int, name: str | None, data: str, fmt: str | None, planned: Planned) -> None:
        label = name or f"manifest-{index}"
        stripped = data.strip()
        if "\n" not in stripped and stripped.startswith(REF_SCHEMES):
            self._manifest_ref(label, stripped, fmt, planned)
            return
        lines = data.splitlines()
        chosen = manifest.detect_format(next((line for line in lines if line.strip()), ""), fmt)
        for _number, entry in manifest.parse(lines, chosen):
            if entry is not None:  # a bad line is one failed item, not a refused job
                planned.items.append(DecodedInput(entry.name, BINARY, b"", ref=entry.ref, error=entry.error))

    def _manifest_ref(self, label: str, ref: str, fmt: str | None, planned: Planned) -> None:
        """A manifest at a URL or in S3: its first line read now (it parses), the rest listed by
        the collect stage."""
        if ref.startswith("s3://"):
            from conveyor.inputs.s3 import parse

            _bucket, key = parse(ref, label)
            if not key or key.endswith("/"):
                raise InvalidInput(f"Manifest {label!r}: {ref!r} is not an S3 object.", input=label)
        else:
            check_url(ref, label, allow_private=self.settings.allow_private_urls)
        first = self.collector.first_line(ref, label)
        chosen = manifest.detect_format(first, fmt, filename=urlsplit(ref).path)
        manifest.check_first_line(first, chosen, label)
        planned.sources.append({"type": MANIFEST, "ref": ref, "format": chosen, "label": label})


def check_url(address: str, label: str, *, allow_private: bool) -> None:
    """The checks a URL gets at submit, without a DNS lookup or a connection."""
    parts = urlsplit(address)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidInput(f"Input {label!r}: {address!r} is not an http(s) URL.", input=label)
    if parts.username or parts.password:
        raise InvalidInput(f"Input {label!r}: credentials in URLs are not accepted.", input=label)
    try:
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        raise InvalidInput(f"Input {label!r}: {address!r} has an invalid port.", input=label) from None
    if allow_private:
        return
    literal = _literal_address(parts.hostname)
    if literal is None:
        return  # a name: resolved and checked when a worker fetches it
    if not is_public(literal):
        raise AddressNotAllowed(
            f"Input {label!r}: {literal} is a loopback, private, link-local or multicast address; such "
            "URLs are refused unless CONVEYOR_ALLOW_PRIVATE_URLS=true.",
            input=label,
            address=str(literal),
        )


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address when it is one, in any spelling a resolver takes without DNS
    (``127.0.0.1``, ``::1``, and the legacy ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
