"""Shared helpers for the benchmarks: a Conveyor server in a subprocess, keys, machine facts, stats.

Standalone on purpose (nothing from ``tests/``): the benchmarks must run from a plain checkout
with only the package installed. Every script prints one JSON document on stdout; progress
and diagnostics go to stderr so that ``run_all.py`` can collect the figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CONVEYOR = [sys.executable, "-m", "conveyor"]
TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"})


# --------------------------------------------------------------------------- output
def log(message: str) -> None:
    """Progress for humans, on stderr (stdout carries only the JSON figures)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """Print the figures as one JSON document on stdout."""
    json.dump(result, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted values."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low))


def summarize(values: Sequence[float], ps: Sequence[float] = (50, 95, 99), digits: int = 2) -> dict[str, Any]:
    """n, min, mean, the requested percentiles and max of a sample (same unit as the values)."""
    data = sorted(float(v) for v in values)
    if not data:
        return {"n": 0}
    out: dict[str, Any] = {"n": len(data), "min": round(data[0], digits)}
    out["mean"] = round(sum(data) / len(data), digits)
    for p in ps:
        out[f"p{p:g}"] = round(percentile(data, p), digits)
    out["max"] = round(data[-1], digits)
    return out


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    with contextlib.suppress(Exception):
        import sqlite3

        import sqlalchemy

        info["sqlite"] = sqlite3.sqlite_version
        info["sqlalchemy"] = sqlalchemy.__version__
    return info


# --------------------------------------------------------------------------- environment
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temp_dir(prefix: str = "conveyor-bench-", keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def bench_env(
    data_dir: Path, *, database_url: str | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The process environment for a server/CLI on ``data_dir``: production timings unless overridden."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(data_dir)
    if database_url:
        env["CONVEYOR_DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CONVEYOR, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"conveyor {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def create_key(env: dict[str, str], name: str = "bench") -> str:
    """``conveyor keys create`` (migrates and creates the default account/project too); the secret."""
    return run_cli(["keys", "create", "--name", name], env).stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """Create the database named in a ``postgresql+psycopg://…/<db>`` URL and drop it afterwards.

    ``<db>`` gets a random suffix so that concurrent runs never share a database.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"{parsed.database or 'conveyor_bench'}_{uuid.uuid4().hex[:8]}"
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- server
@dataclass
class BenchServer:
    url: str
    key: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str] = field(default_factory=list)

    def client(self, timeout: float = 600) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.key}"}, timeout=timeout
        )

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 40) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log("server did not stop on SIGTERM; killing its process group")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def start_server(
    data_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    key: str | None = None,
    command: list[str] | None = None,
    ready_timeout: float = 120,
) -> BenchServer:
    """Start ``conveyor serve`` (or ``command`` taking the same options) and wait for /readyz."""
    env = dict(env or bench_env(data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = create_key(env)
    port = free_port()
    log_path = data_dir / f"server-{port}.log"
    argv = [
        *(command or CONVEYOR),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = BenchServer(f"http://127.0.0.1:{port}", key, data_dir, env, process, log_path, argv)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early ({process.returncode}):\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(timeout=5)
    raise RuntimeError(f"server did not become ready in {ready_timeout:.0f} s:\n{server.log_tail()}")


@contextlib.contextmanager
def running_server(data_dir: Path, **kw: Any) -> Iterator[BenchServer]:
    server = start_server(data_dir, **kw)
    try:
        yield server
    finally:
        code = server.stop()
        if code not in (0, None):
            log(f"server exited with {code}; last log lines:\n{server.log_tail()}")


def wait_terminal(
    client: httpx.Client, job_id: int, *, timeout: float = 3600, interval: float = 0.1
) -> tuple[dict[str, Any], float]:
    """Poll the job until it is terminal; the job and the monotonic time it was first seen so."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v2/jobs/{job_id}/")
        seen = time.monotonic()
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL:
            return job, seen
        if seen > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
        time.sleep(interval)


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
