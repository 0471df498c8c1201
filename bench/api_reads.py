"""API requests/s for job status reads, with a bounded concurrent client.

One server (embedded mode, SQLite unless ``--database-url``, one local worker) holds ``--jobs``
finished jobs of a few items each. Then, for ``--seconds`` per endpoint, ``--concurrency``
client threads (each with its own keep-alive ``httpx.Client``) read random jobs back to back:

- ``GET /api/v2/jobs/{id}/`` (native: the job with progress, counters and recent logs);
- ``GET /api/jobs/{identifier}`` (Modzy dialect: the job object by its UUID).

Baseline in the same run: ``GET /livez`` on the same server with the same client (no auth, no
database): what the HTTP stack and this client can do at all on this machine. Target: each
status read at least ``TARGET_SHARE`` (0.5) of the baseline's requests/s. Requests/s is
successful answers over the phase's wall time; latency p50/p99 per request; any answer other
than 200 counts as an error. The server process's CPU time per request (from ``/proc``) is
reported too, with the same share computed from it: on a busy machine it moves much less.
The client runs on the same cores as the server.

    .venv/bin/python bench/api_reads.py [--jobs 200] [--seconds 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from common import bench_env, emit, log, machine_info, postgres_database, running_server, summarize, temp_dir

TARGET_SHARE = 0.5  # status reads >= half of /livez requests/s, same server, client and run


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str,
    headers: dict[str, str],
    paths: list[str],
    seconds: float,
    concurrency: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """``concurrency`` threads GET random ``paths`` for ``seconds``; requests/s, latency, errors,
    and the server process's CPU time per request (robust to other load on the machine)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client_thread(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            client.get(paths[0])  # connect before the clock starts
            start.wait()
            while time.monotonic() < stop_at[0]:
                t0 = time.perf_counter()
                try:
                    status = client.get(rng.choice(paths)).status_code
                except httpx.HTTPError:
                    status = -1
                elapsed = (time.perf_counter() - t0) * 1000
                if status == 200:
                    latencies[index].append(elapsed)
                else:
                    errors[index] += 1
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client_thread, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds + 30  # provisional, until every client is connected
    start.wait()
    began = time.monotonic()
    cpu_before = cpu_seconds(server_pid) if server_pid else None
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    cpu_after = cpu_seconds(server_pid) if server_pid else None
    ok = [ms for per_thread in latencies for ms in per_thread]
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and ok:
        cpu_ms = round((cpu_after - cpu_before) * 1000 / (len(ok) + sum(errors)), 3)
    return {
        "server_cpu_ms_per_request": cpu_ms,
        "requests": len(ok) + sum(errors),
        "errors": sum(errors),
        "error_statuses": statuses,
        "seconds": round(wall, 2),
        "requests_per_second": round(len(ok) / wall, 1),
        "latency_ms": summarize(ok, (50, 90, 99)),
    }


def seed_jobs(client: httpx.Client, count: int, items: int, prefix: str = "reads") -> list[dict[str, Any]]:
    """``count`` finished ``test-delay`` jobs of ``items`` items, named ``<prefix>-<n>``; their
    native and Modzy ids."""
    submitted = []
    for index in range(count):
        response = client.post(
            "/api/v2/jobs/?start_now=true",
            json={
                "name": f"{prefix}-{index}",
                "pipeline": "test-delay",
                "inputs": [{"name": f"in-{i}", "kind": "text", "data": f"x{i}"} for i in range(items)],
                "config": {"item_seconds": 0},
            },
        )
        response.raise_for_status()
        submitted.append(response.json())
    deadline = time.monotonic() + 300
    for job in submitted:
        while client.get(f"/api/v2/jobs/{job['id']}/").json()["status"] != "SUCCESS":
            if time.monotonic() > deadline:
                raise TimeoutError(f"seed job {job['id']} did not finish")
            time.sleep(0.05)
    return submitted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="finished jobs to read (default 200)")
    parser.add_argument("--items", type=int, default=5, help="items per job (default 5)")
    parser.add_argument("--seconds", type=float, default=20, help="per endpoint (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL (a temporary database) instead of SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 jobs, 3 s per endpoint")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.seconds = 20, 3.0

    def measure(database_url: str | None) -> dict[str, Any]:
        with temp_dir() as data_dir:
            env = bench_env(data_dir, database_url=database_url)
            with running_server(data_dir, workers=1, env=env) as server, server.client() as client:
                log(f"seeding {args.jobs} jobs")
                jobs = seed_jobs(client, args.jobs, args.items)
                headers = {"Authorization": f"Token {server.key}"}
                phases: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
                    "livez_baseline": ("GET /livez", lambda job: "/livez"),
                    "v2_job": ("GET /api/v2/jobs/{id}/", lambda job: f"/api/v2/jobs/{job['id']}/"),
                    "modzy_job": (
                        "GET /api/jobs/{identifier}",
                        lambda job: f"/api/jobs/{job['job_identifier']}",
                    ),
                }
                full = [client.get(f"/api/v2/jobs/{job['id']}/").json() for job in jobs]
                client.get(
                    f"/api/jobs/{full[0]['job_identifier']}"
                ).raise_for_status()  # the Modzy id is the UUID
                out: dict[str, Any] = {}
                for name, (label, path_of) in phases.items():
                    log(f"{label}: {args.concurrency} clients for {args.seconds:g} s")
                    out[name] = {
                        "endpoint": label,
                        **load(
                            server.url,
                            headers,
                            [path_of(job) for job in full],
                            args.seconds,
                            args.concurrency,
                            server.process.pid if server.process else None,
                        ),
                    }
                    log(f"{label}: {out[name]['requests_per_second']} req/s")
                return out

    if args.database_url:
        with postgres_database(args.database_url) as url:
            phases = measure(url)
        database = "postgresql (temporary database)"
    else:
        phases = measure(None)
        database = "sqlite (embedded default)"
    baseline = phases["livez_baseline"]["requests_per_second"] or 1
    shares = {
        name: round(phases[name]["requests_per_second"] / baseline, 3) for name in ("v2_job", "modzy_job")
    }
    livez_cpu = phases["livez_baseline"]["server_cpu_ms_per_request"]
    cpu_shares = {
        name: round(livez_cpu / phases[name]["server_cpu_ms_per_request"], 3)
        for name in ("v2_job", "modzy_job")
        if livez_cpu and phases[name]["server_cpu_ms_per_request"]
    }
    emit(
        {
            "benchmark": "api_reads",
            "machine": machine_info(),
            "params": {
                "jobs": args.jobs,
                "items_per_job": args.items,
                "seconds_per_endpoint": args.seconds,
                "concurrency": args.concurrency,
                "database": database,
                "client": "httpx, one keep-alive client per thread, in one process on the same machine",
            },
            **phases,
            "share_of_baseline": shares,
            # /livez's server CPU per request over each read's: the same share measured in server
            # CPU time, which other load on the machine disturbs much less than requests/s.
            "cpu_share_of_baseline": cpu_shares,
            "errors": sum(p["errors"] for p in phases.values()),
            "target": f"each status read >= {TARGET_SHARE} x /livez requests/s (same server, client, run)",
            "target_share": TARGET_SHARE,
            "met": all(share >= TARGET_SHARE for share in shares.values()),
            "notes": [
                "The baseline is /livez on the same server and client (no auth, no database).",
                "Client threads share the 2 cores with the server: the figures are a floor, not a ceiling.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
