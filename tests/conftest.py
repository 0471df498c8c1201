"""Shared fixtures: real Conveyor servers in subprocesses, each with its own data directory.

Fixtures only; the helpers they compose (and that tests import) are in ``tests.helpers``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server, start_server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for tests that only need an API (they must not assume an empty history)."""
    server = start_server(tmp_path_factory.mktemp("shared"))
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start dedicated servers (for tests that kill, stop or count things)."""
    started: list[Server] = []

    def make(**kw: Any) -> Server:
        server = start_server(tmp_path / f"data{len(started)}", **kw)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(signal.SIGKILL if server.running() else signal.SIGTERM)
        server.kill()  # its whole process group: local workers a test left behind
