"""Helpers shared by the test suites; the fixtures that compose them are in the conftest files.

A real server is a :class:`conveyor.testing.ServerProcess` (``Server`` here) started with the
tests' fast timings (``TEST_ENV``). The submodules hold the helpers of one concern each:
``api`` (native API calls), ``inputs`` (the input-kind servers), ``backends`` (PostgreSQL and
the other services), ``celery`` (workers and brokers), ``deployments`` (the contract suite's
backend combinations), ``reliability`` (kills and exactly-once checks), ``browser``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from conveyor.testing import (
    CONVEYOR,
    TERMINAL_STATUSES,
    ServerProcess,
    create_key,
    free_port,
    kill_process_group,
    run_cli,
)

__all__ = [
    "CONVEYOR",
    "TERMINAL_STATUSES",
    "TEST_ENV",
    "Server",
    "alive",
    "assert_counters_match_rows",
    "children_of",
    "create_key",
    "free_port",
    "kill_process_group",
    "run_cli",
    "start_server",
    "submit_texts",
    "text_inputs",
    "wait_for",
    "wait_status",
]

# Fast timings for tests; production defaults are in conveyor.settings.
TEST_ENV = {
    "CONVEYOR_LEASE_SECONDS": "2",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.4",
    "CONVEYOR_SWEEP_SECONDS": "0.2",
    "CONVEYOR_FLUSH_SECONDS": "0.1",
    "CONVEYOR_CANCEL_GRACE_SECONDS": "3",
}

Server = ServerProcess


def start_server(
    data_dir: Path,
    *,
    workers: int = 2,
    extra_env: Mapping[str, str] | None = None,
    key: str | None = None,
    extra_args: Sequence[str] = (),
    ready_path: str = "/readyz",
    log_dir: Path | None = None,
) -> Server:
    """A started server with ``TEST_ENV`` under ``extra_env``, once ``ready_path`` answers 200
    (``/livez`` for a server that is expected not to be ready, e.g. with its broker down). Its
    log goes to ``log_dir`` (default: the data directory)."""
    port = free_port()
    server = ServerProcess(
        data_dir,
        workers=workers,
        extra_env={**TEST_ENV, **(extra_env or {})},
        key=key,
        port=port,
        extra_args=extra_args,
        ready_path=ready_path,
        log_path=(log_dir or data_dir) / f"server-{port}.log",
    )
    return server.start()


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_status(
    client: httpx.Client, job_id: int, statuses: Collection[str], timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = client.get(f"/api/v2/jobs/{job_id}/").json()
        return job if job["status"] in statuses else None

    result: dict[str, Any] = wait_for(check, timeout, what=f"job {job_id} in {set(statuses)}")
    return result


def text_inputs(n: int, prefix: str = "item") -> list[dict[str, str]]:
    return [{"name": f"{prefix}-{i}", "kind": "text", "data": f"{prefix} {i}"} for i in range(n)]


def submit_texts(server: Server, n: int, *, name: str, **body: Any) -> dict[str, Any]:
    """Submit and start a ``test-delay`` job over ``n`` texts; the 201 body."""
    with server.client() as client:
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={"name": name, "pipeline": "test-delay", "inputs": text_inputs(n), **body},
        )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def children_of(pid: int) -> list[int]:
    """Pids of the live (not zombie) children of ``pid``, read from /proc (no psutil)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The fields after the command name, which may itself hold spaces or parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie answers ``kill(pid, 0)`` too, so its state is read)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def assert_counters_match_rows(job: dict[str, Any], rows: list[tuple[int, str, int]]) -> None:
    """A finished job's counters equal its item rows ``(seq, status, attempts)``: nothing lost or
    counted twice."""
    by_status = {
        s: sum(1 for _, status, _ in rows if status == s) for s in ("SUCCESS", "FAILURE", "CANCELED")
    }
    assert len(rows) == job["total"]
    assert job["completed"] == by_status["SUCCESS"]
    assert job["failed"] == by_status["FAILURE"]
    assert job["canceled"] == by_status["CANCELED"]
    assert job["pending"] == 0
    assert job["completed"] + job["failed"] + job["canceled"] == job["total"]
