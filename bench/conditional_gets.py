"""What a conditional GET saves: a 200 against a 304 on the job reads.

One server (embedded mode, SQLite unless ``--database-url``, one local worker) holds ``--jobs``
finished jobs. For each read (the job detail, its items, a history page of ``--page`` jobs, and
the Modzy job object) one keep-alive client sends ``--requests`` requests without
``If-None-Match`` (full 200s), then as many with the ETag it got (304s, no body). Reported:
requests/s, latency p50/p99, and bytes per answer. Both phases use the same client, server and
paths, back to back.

    .venv/bin/python bench/conditional_gets.py [--jobs 100] [--requests 2000] [--page 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx

from api_reads import seed_jobs
from common import bench_env, emit, log, machine_info, postgres_database, running_server, summarize, temp_dir


def phase(
    client: httpx.Client, path: str, headers: dict[str, str], requests: int, expect: int
) -> dict[str, Any]:
    latencies: list[float] = []
    size = 0
    began = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        response = client.get(path, headers=headers)
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status_code != expect:
            raise RuntimeError(f"{path}: {response.status_code}, expected {expect}")
        size = len(response.content)
    wall = time.perf_counter() - began
    return {
        "requests_per_second": round(requests / wall, 1),
        "latency_ms": summarize(latencies, (50, 99)),
        "body_bytes": size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000, help="per phase (default 2000)")
    parser.add_argument("--page", type=int, default=50, help="history page size (default 50)")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL (a temporary database) instead of SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 jobs, 200 requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.requests = 20, 200

    def measure(database_url: str | None) -> dict[str, Any]:
        with temp_dir() as data_dir:
            env = bench_env(data_dir, database_url=database_url)
            with running_server(data_dir, workers=1, env=env) as server, server.client() as client:
                log(f"seeding {args.jobs} jobs")
                seeded = seed_jobs(client, args.jobs, items=5)
                ids = [job["id"] for job in seeded]
                reads = {
                    "detail": f"/api/v2/jobs/{ids[0]}/",
                    "items": f"/api/v2/jobs/{ids[0]}/items/",
                    "history": f"/api/v2/jobs/?limit={args.page}",
                    "modzy_job": f"/api/jobs/{seeded[0]['job_identifier']}",
                }
                out: dict[str, Any] = {}
                for name, path in reads.items():
                    etag = client.get(path).headers["etag"]
                    full = phase(client, path, {}, args.requests, 200)
                    cached = phase(client, path, {"If-None-Match": etag}, args.requests, 304)
                    out[name] = {
                        "path": path,
                        "200": full,
                        "304": cached,
                        "speedup": round(cached["requests_per_second"] / full["requests_per_second"], 2),
                    }
                    log(
                        f"{name}: 200 {full['requests_per_second']} req/s, "
                        f"304 {cached['requests_per_second']} req/s"
                    )
                return out

    if args.database_url:
        with postgres_database(args.database_url) as url:
            reads = measure(url)
        database = "postgresql (temporary database)"
    else:
        reads = measure(None)
        database = "sqlite (embedded default)"
    emit(
        {
            "benchmark": "conditional_gets",
            "machine": machine_info(),
            "params": {
                "jobs": args.jobs,
                "requests_per_phase": args.requests,
                "page": args.page,
                "database": database,
            },
            **reads,
            "target": "a 304 costs less than a 200 (higher requests/s)",
            "met": all(r["speedup"] > 1 for r in reads.values()),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
