"""Clients of the module's ``server`` fixture (each test module starts its own server)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from modzy import ApiClient
from tests.helpers import Server


@pytest.fixture(scope="module")
def client(server: Server) -> ApiClient:
    """The published modzy-sdk, pointed at the server's Modzy-compatible ``/api``."""
    return ApiClient(base_url=f"{server.url}/api", api_key=server.key)


@pytest.fixture(scope="module")
def native(server: Server) -> Iterator[httpx.Client]:
    """A native ``/api/v2`` client with the same key."""
    with server.client() as c:
        yield c
