"""Signed item-image URLs: valid for their item until they expire, and nothing else."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from conveyor import media


def _query(url: str) -> tuple[int, str]:
    query = parse_qs(urlsplit(url).query)
    return int(query["expires"][0]), query["signature"][0]


def test_a_signed_url_is_valid_for_its_item_until_it_expires() -> None:
    url = media.signed_url("http://conveyor:8000/", "s3cret", 42, ttl_seconds=60, now=1000.0)
    assert url.startswith("http://conveyor:8000/api/v2/media/items/42?")
    expires, signature = _query(url)
    assert expires == 1060
    assert media.is_valid("s3cret", 42, expires, signature, now=1059.0)
    assert not media.is_valid("s3cret", 42, expires, signature, now=1061.0)  # expired
    assert not media.is_valid("s3cret", 43, expires, signature, now=1000.0)  # another item
    assert not media.is_valid("other", 42, expires, signature, now=1000.0)  # another server's secret
    assert not media.is_valid("s3cret", 42, expires + 1, signature, now=1000.0)  # a longer life


def test_a_forged_signature_of_any_characters_is_just_invalid() -> None:
    # Found by schemathesis: non-ASCII made hmac.compare_digest raise (a 500).
    for forged in ("\u0095\U0008e830b", "", "é" * 64, "0" * 64):
        assert not media.is_valid("s3cret", 42, 2000, forged, now=1000.0)


def test_media_types_come_from_the_bytes() -> None:
    assert media.media_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert media.media_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert media.media_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert media.media_type(b"hello") == "application/octet-stream"
