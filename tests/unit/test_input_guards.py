"""Pure checks of the input guards: upload file names and the URL address policy."""

from __future__ import annotations

import ipaddress

import pytest

from conveyor.inputs.upload import sanitize_filename
from conveyor.inputs.url import is_public


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\cat.png", "cat.png"),
        ("/abs/path/", "fallback"),
        ("..", "fallback"),
        ("", "fallback"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("x" * 600, "x" * 500),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw, "fallback") == expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_s3_input_without_boto3_is_a_clear_400(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from conveyor.errors import InvalidInput
    from conveyor.inputs.resolve import InputResolver
    from conveyor.settings import Settings

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if `conveyor[s3]` were not installed
    resolver = InputResolver(Settings())
    with pytest.raises(InvalidInput, match=r"conveyor\[s3\]") as caught:
        list(resolver.resolve(0, None, "s3", "s3://bucket/key"))
    assert caught.value.status_code == 400
