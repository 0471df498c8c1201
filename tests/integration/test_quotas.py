"""Per-key quotas (off by default): 429 with Retry-After, in both dialects, nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Server, start_server
from tests.helpers.api import JOBS, assert_error, count_named, submit, unique


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("quotas"),
        extra_env={
            "CONVEYOR_QUOTA_JOBS_PER_MINUTE": "4",
            "CONVEYOR_QUOTA_CONCURRENT_JOBS": "2",
            "CONVEYOR_QUOTA_INPUT_BYTES_PER_MINUTE": "100",
        },
    )
    yield started
    started.stop()


def test_concurrent_and_per_minute_quotas(server: Server) -> None:
    key = server.create_key(role="member", name=unique("q"))
    with server.client(key) as c:
        waiting = [submit(c, name=unique("held"), n=1, start_now=False) for _ in range(2)]
        name = unique("third")
        refused = c.post(
            JOBS,
            json={
                "name": name,
                "pipeline": "test-delay",
                "inputs": [{"name": "a", "kind": "text", "data": "a"}],
            },
        )
        error = assert_error(refused, 429)
        assert error["error"] == "quota_exceeded" and error["detail"]["quota"] == "concurrent_jobs"
        assert int(refused.headers["retry-after"]) >= 1
        assert count_named(c, name) == 0
        assert c.post(f"{JOBS}{waiting[0]['id']}/cancel/").status_code == 200
        third = submit(c, name=unique("third"), n=1, start_now=False)  # a slot is free again
        for job in (waiting[1], third):
            c.post(f"{JOBS}{job['id']}/cancel/")
        submit(c, name=unique("fourth"), n=1, start_now=False)  # the 4th job of this minute
        # The 5th in a minute: the per-minute quota, with the wait until the window frees a slot.
        modzy = c.post(
            "/api/jobs",
            json={
                "model": {"identifier": "test-delay", "version": "1"},
                "input": {"type": "text", "sources": {"a": {"i": "x"}}},
            },
        )
        assert modzy.status_code == 429 and modzy.json()["statusCode"] == 429
        assert modzy.json()["detail"]["quota"] == "jobs_per_minute"
        assert 1 <= int(modzy.headers["retry-after"]) <= 60
    # Quotas are per key: another key of the same account is not held back.
    with server.client(server.create_key(role="member", name=unique("q2"))) as other:
        assert (
            other.post(
                JOBS,
                json={
                    "name": unique("free"),
                    "pipeline": "test-delay",
                    "inputs": [{"name": "a", "kind": "text", "data": "a"}],
                },
            ).status_code
            == 201
        )


def test_input_bytes_per_minute(server: Server) -> None:
    with server.client(server.create_key(role="member", name=unique("bytes"))) as c:
        inputs = [{"name": "a", "kind": "text", "data": "x" * 60}]
        assert (
            c.post(JOBS, json={"name": unique("b1"), "pipeline": "test-delay", "inputs": inputs}).status_code
            == 201
        )
        error = assert_error(
            c.post(JOBS, json={"name": unique("b2"), "pipeline": "test-delay", "inputs": inputs}), 429
        )
        assert error["detail"]["quota"] == "input_bytes_per_minute" and "100 bytes" in error["message"]
