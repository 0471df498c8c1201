"""Shared fixtures: real Conveyor servers in subprocesses, each with its own data directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONVEYOR = [sys.executable, "-m", "conveyor"]

# Fast timings for tests; production defaults are in conveyor.settings.
TEST_ENV = {
    "CONVEYOR_LEASE_SECONDS": "2",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.4",
    "CONVEYOR_SWEEP_SECONDS": "0.2",
    "CONVEYOR_FLUSH_SECONDS": "0.1",
    "CONVEYOR_CANCEL_GRACE_SECONDS": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONVEYOR, *args], env=env, capture_output=True, text=True, timeout=timeout, **kw)


@dataclass
class Server:
    url: str
    key: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {key or self.key}"}, timeout=60
        )

    def create_key(self, role: str = "owner", project: str | None = None, name: str = "test") -> str:
        args = ["keys", "create", "--name", name, "--role", role]
        if project:
            args += ["--project", project]
        done = run_cli(args, self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_server(
    data_dir: Path,
    *,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    key: str | None = None,
    extra_args: list[str] | None = None,
    ready_path: str = "/readyz",
    log_dir: Path | None = None,
) -> Server:
    """``conveyor serve`` in a subprocess, once ``ready_path`` answers 200 (``/livez`` for a
    server that is expected not to be ready, e.g. with its broker down). Its log goes to
    ``log_dir`` (default: the data directory)."""
    env = {**os.environ, **TEST_ENV, "CONVEYOR_DATA_DIR": str(data_dir), **(extra_env or {})}
    env.pop("CONVEYOR_URL", None)
    env.pop("CONVEYOR_KEY", None)
    data_dir.mkdir(parents=True, exist_ok=True)
    if key is None:
        made = run_cli(["keys", "create", "--name", "tests"], env)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
    port = free_port()
    log_path = (log_dir or data_dir) / f"server-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            *CONVEYOR,
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            *(extra_args or []),  # a repeated option wins, e.g. ["--log-level", "info"]
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")
    env["CONVEYOR_URL"] = url
    env["CONVEYOR_KEY"] = key
    return Server(url, key, data_dir, env, process, log_path)


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
        server.stop(signal.SIGKILL if server.process.poll() is None else signal.SIGTERM)
        _kill_group(server.process.pid)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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


def wait_status(client: httpx.Client, job_id: int, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = client.get(f"/api/v2/jobs/{job_id}/").json()
        return job if job["status"] in statuses else None

    result: dict[str, Any] = wait_for(check, timeout, what=f"job {job_id} in {statuses}")
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
