"""Signed, expiring URLs of item images, for processing services that fetch their inputs by URL.

A processing service (Antenna's protocol) is sent ``{"id", "url"}`` per image and downloads the
image itself. Conveyor serves each item's bytes at ``/api/v2/media/items/<id>`` to whoever holds
a URL signed with the server's secret (HMAC-SHA256 over the item id and the expiry), so a
service needs no API key and a URL stops working once it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SECRET_NAME = "media-url-signing"
PATH = "/api/v2/media/items/{item_id}"


def _signature(secret: str, item_id: int, expires: int) -> str:
    message = f"{item_id}.{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_url(base_url: str, secret: str, item_id: int, ttl_seconds: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_seconds)
    # Digits and hex only: nothing to escape (urlencode cost more than the HMAC).
    signature = _signature(secret, item_id, expires)
    return f"{base_url.rstrip('/')}{PATH.format(item_id=item_id)}?expires={expires}&signature={signature}"


def is_valid(secret: str, item_id: int, expires: int, signature: str, now: float | None = None) -> bool:
    """True when the signature is the server's for this item and expiry, and it has not expired."""
    if expires < (time.time() if now is None else now):
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a forged URL may hold any).
    return hmac.compare_digest(_signature(secret, item_id, expires).encode(), signature.encode())


def media_type(data: bytes) -> str:
    """The image type from the first bytes (what a service needs to decode it); else octet-stream."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"
