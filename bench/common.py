"""Shared helpers for the benchmarks: a Conveyor server in a subprocess, machine facts, stats.

Nothing from ``tests/``: the benchmarks must run from a plain checkout with only the package
installed, so servers, keys and PostgreSQL databases come from ``conveyor.testing`` (which
ships in the package) with production timings. Every script prints one JSON document on
stdout; progress and diagnostics go to stderr so that ``run_all.py`` can collect the figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from conveyor import testing
from conveyor.testing import CONVEYOR, TERMINAL_STATUSES, ServerProcess

__all__ = ["CONVEYOR", "TERMINAL_STATUSES", "ServerProcess"]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


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
    """``conveyor <args>``; RuntimeError with its error output when it fails."""
    done = testing.run_cli(args, env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"conveyor {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on the server of a ``postgresql+psycopg://…/<db>`` URL, dropped afterwards;
    named ``<db>_<random>`` so that concurrent runs never share one."""
    with testing.postgres_database(url, prefix=make_url(url).database or "conveyor_bench") as fresh:
        yield fresh


# --------------------------------------------------------------------------- server
@contextlib.contextmanager
def running_server(
    data_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    key: str | None = None,
    command: list[str] | None = None,
    ready_timeout: float = 120,
) -> Iterator[ServerProcess]:
    """``conveyor serve`` (or ``command`` taking the same options) with ``bench_env`` unless
    ``env`` is given, once ready; stopped afterwards (its log's tail if it did not exit cleanly).
    Its clients wait up to 600 s for an answer (a big submission takes a while)."""
    server = ServerProcess(
        data_dir,
        workers=workers,
        env=env or bench_env(data_dir),
        key=key,
        key_name="bench",
        command=command,
        ready_timeout=ready_timeout,
        client_timeout=600,
    )
    server.start()
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
        if job["status"] in TERMINAL_STATUSES:
            return job, seen
        if seen > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
        time.sleep(interval)


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# --------------------------------------------------------------------------- inputs by reference
@contextlib.contextmanager
def serving(root: Path, ready_timeout: float = 30) -> Iterator[str]:
    """``object_server.py`` over ``root`` on a free 127.0.0.1 port, in its own process; its base
    URL once it answers. Stopped (SIGTERM, then SIGKILL) afterwards."""
    port = testing.free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "object_server.py"), "--root", str(root), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/_hits", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"object server on {base} did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            testing.kill_process_group(process.pid)
            process.wait(timeout=10)


def object_hits(base: str) -> dict[str, Any]:
    """Files served so far by the ``serving`` server: ``{"requests": N, "bytes": B, "by_dir": {…}}``."""
    hits: dict[str, Any] = httpx.get(f"{base}/_hits", timeout=10).json()
    return hits
