"""No-op items/s through 2 HTTP workers (``conveyor worker --server``) vs 2 local workers, same run.

One job of N text items on ``test-delay`` with ``item_seconds=0`` (Conveyor's own overhead only),
SQLite, default chunk size. First the baseline: ``conveyor serve --workers 2`` (local worker
processes claiming chunks in the database). Then ``conveyor serve --workers 0`` and two HTTP
worker processes (one thread each, each from its own data directory, a worker key) that lease the
chunks over loopback HTTP: items travel base64 in the lease, outcomes come back as JSON.

Rounds interleave (local, HTTP, local, HTTP) and the best of each side counts. Measured from
the client as in ``noop_throughput.py``: end to end (POST until terminal) and
server side (the job's started_at -> finished_at, which leaves out the HTTP workers' idle poll
before the first lease). Target: HTTP workers at >= 0.5x the local workers.

    .venv/bin/python bench/http_workers.py [--items 30000] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from typing import Any

from common import (
    bench_env,
    emit,
    log,
    machine_info,
    parse_time,
    rnd,
    running_server,
    temp_dir,
    wait_terminal,
)
from conveyor import testing
from noop_throughput import inputs, warm_up

TARGET_RATIO = 0.5
WORKERS = 2


def one_job(client: Any, n: int, poll: float) -> dict[str, Any]:
    body = {"name": f"noop-{n}", "pipeline": "test-delay", "inputs": inputs(n), "config": {"item_seconds": 0}}
    t0 = time.monotonic()
    response = client.post("/api/v2/jobs/?start_now=true", json=body)
    t_submitted = time.monotonic()
    if response.status_code != 201:
        raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
    job, t_done = wait_terminal(client, response.json()["id"], interval=poll)
    started, finished = parse_time(job["started_at"]), parse_time(job["finished_at"])
    server_seconds = (finished - started).total_seconds() if started and finished else None
    return {
        "status": job["status"],
        "completed": job["completed"],
        "submit_seconds": rnd(t_submitted - t0),
        "processing_seconds": rnd(t_done - t_submitted),
        "end_to_end_seconds": rnd(t_done - t0),
        "end_to_end_items_per_second": round(n / (t_done - t0)),
        "server_items_per_second": round(n / server_seconds) if server_seconds else None,
    }


def local_run(n: int, poll: float) -> dict[str, Any]:
    with (
        temp_dir() as data_dir,
        running_server(data_dir, workers=WORKERS, env=bench_env(data_dir)) as server,
        server.client() as client,
    ):
        warm_up(client)
        log(f"local workers: {n} items")
        return one_job(client, n, poll)


def http_run(n: int, poll: float) -> dict[str, Any]:
    with (
        temp_dir() as data_dir,
        running_server(data_dir / "server", workers=0, env=bench_env(data_dir / "server")) as server,
    ):
        key = server.create_key(role="worker", name="bench-worker")
        workers = [
            testing.http_worker(
                server.url, key, data_dir / f"worker-{i}", pipelines=["test-delay"], name=f"bench-{i}"
            )
            for i in range(WORKERS)
        ]
        try:
            with server.client() as client:
                warm_up(client)
                log(f"HTTP workers: {n} items")
                result = one_job(client, n, poll)
        finally:
            codes = []
            for process in workers:
                process.send_signal(signal.SIGTERM)
            for process in workers:
                try:
                    codes.append(process.wait(30))
                except subprocess.TimeoutExpired:
                    testing.kill_process_group(process.pid)
                    codes.append(process.wait(10))
        result["worker_exit_codes"] = codes
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=30_000, help="items in the job (default 30000)")
    parser.add_argument("--poll", type=float, default=0.05, help="job polling period in s (default 0.05)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of each (best counts; default 2)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 10000 items, one round")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else args.items
    rounds = 1 if args.quick else max(1, args.rounds)
    # Interleaved (local, HTTP, local, HTTP, ...), best of each: the load of a shared machine
    # changes from minute to minute, and one order would favour one side.
    locals_, https = [], []
    for number in range(rounds):
        log(f"round {number + 1} of {rounds}")
        locals_.append(local_run(n, args.poll))
        https.append(http_run(n, args.poll))

    def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return max(runs, key=lambda r: r["server_items_per_second"] or 0)

    local, http = best(locals_), best(https)
    ratio_e2e = http["end_to_end_items_per_second"] / local["end_to_end_items_per_second"]
    ratio_server = (http["server_items_per_second"] or 0) / (local["server_items_per_second"] or 1)
    log(
        f"local {local['server_items_per_second']} items/s, HTTP {http['server_items_per_second']} items/s "
        f"(server side); ratio {ratio_server:.2f}x (end to end {ratio_e2e:.2f}x)"
    )
    emit(
        {
            "benchmark": "http_workers",
            "machine": machine_info(),
            "params": {
                "items": n,
                "workers": WORKERS,
                "pipeline": "test-delay",
                "config": {"item_seconds": 0},
                "database": "sqlite",
                "http_worker_threads": 1,
                "rounds": rounds,
            },
            "local": local,
            "http": http,
            "rounds": {
                "local_server_items_per_second": [r["server_items_per_second"] for r in locals_],
                "http_server_items_per_second": [r["server_items_per_second"] for r in https],
            },
            "ratio_http_to_local_server_side": round(ratio_server, 3),
            "ratio_http_to_local_end_to_end": round(ratio_e2e, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio_server >= TARGET_RATIO,
            "notes": [
                "Wall-clock figures on a shared machine: noisy, compare within one run.",
                "server side = N / (finished_at - started_at); end to end includes the submit and, for HTTP "
                "workers, their idle poll (0.5 s) before the first lease.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
