"""No-op items/s through the embedded mode, against a plain Python loop over the same pipeline code.

One job of N text items on ``test-delay`` with ``item_seconds=0`` (the pipeline does nothing but
build a result per item), 2 local worker processes, SQLite. Measured from the client:

- submit: POST with every input until the 201 (validation, item rows, chunks, one transaction);
- processing: 201 until the job is seen terminal (polling every ``--poll`` s);
- end-to-end: POST until terminal; items/s = N / end-to-end;
- server-side: N / (finished_at - started_at) as the job reports them.

Baseline in the same run: ``DelayPipeline.process_batch`` called in-process on the same N items
in batches of the pipeline's batch size (the "plain loop"). The ratio tells what share of the
time is Conveyor's own machinery (HTTP, store, chunks, leases, write-back).

    .venv/bin/python bench/noop_throughput.py [--items 200000] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
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

TARGET_ITEMS_PER_SECOND = 20_000


def inputs(n: int) -> list[dict[str, str]]:
    return [{"name": f"item-{i}", "kind": "text", "data": f"payload {i}"} for i in range(n)]


def plain_loop(n: int, repeat: int = 3) -> dict[str, Any]:
    """The same pipeline code with nothing around it: best of ``repeat`` runs."""
    from conveyor.domain.work import ItemInput
    from conveyor.pipelines.base import BatchContext
    from conveyor.pipelines.delay import DelayPipeline

    made = time.perf_counter()
    items = [ItemInput(i, i, f"item-{i}", "text", f"payload {i}".encode()) for i in range(n)]
    build_seconds = time.perf_counter() - made
    pipeline = DelayPipeline(Path("."))
    config: dict[str, Any] = {"item_seconds": 0}
    batch_size = pipeline.effective_batch_size(config)
    ctx = BatchContext(config=config, explain=False, data_dir=Path("."))
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = 0
        for first in range(0, n, batch_size):
            done += len(pipeline.process_batch(items[first : first + batch_size], ctx))
        runs.append(time.perf_counter() - started)
        assert done == n
    best = min(runs)
    return {
        "batch_size": batch_size,
        "seconds_best": rnd(best, 4),
        "seconds_runs": [rnd(r, 4) for r in runs],
        "items_per_second": round(n / best),
        "build_item_inputs_seconds": rnd(build_seconds, 4),
    }


def warm_up(client: Any) -> dict[str, Any]:
    """One 1-item job first, so worker start-up and pipeline loading are not in the measurement."""
    t0 = time.monotonic()
    response = client.post(
        "/api/v2/jobs/?start_now=true",
        json={
            "name": "warm-up",
            "pipeline": "test-delay",
            "inputs": inputs(1),
            "config": {"item_seconds": 0},
        },
    )
    response.raise_for_status()
    job, seen = wait_terminal(client, response.json()["id"], interval=0.01)
    return {"status": job["status"], "queue_time_ms": job["queue_time_ms"], "seconds": rnd(seen - t0)}


def conveyor_run(
    n: int, workers: int, poll: float, extra_env: dict[str, str], command: list[str] | None = None
) -> dict[str, Any]:
    with temp_dir() as data_dir:
        env = bench_env(data_dir, extra=extra_env)
        log(f"starting server with {workers} worker(s) in {data_dir}")
        with (
            running_server(data_dir, workers=workers, env=env, command=command) as server,
            server.client() as client,
        ):
            warmup = warm_up(client)
            body = {
                "name": f"noop-{n}",
                "pipeline": "test-delay",
                "inputs": inputs(n),
                "config": {"item_seconds": 0},
            }
            log(f"submitting {n} items")
            t0 = time.monotonic()
            response = client.post("/api/v2/jobs/?start_now=true", json=body)
            t_submitted = time.monotonic()
            if response.status_code != 201:
                raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
            job_id = response.json()["id"]
            del body
            log(f"job {job_id} accepted in {t_submitted - t0:.2f} s; waiting for it to finish")
            job, t_done = wait_terminal(client, job_id, interval=poll)
    started_at, finished_at = parse_time(job["started_at"]), parse_time(job["finished_at"])
    submitted_at = parse_time(job.get("submitted_at"))
    server_seconds = (finished_at - started_at).total_seconds() if started_at and finished_at else None
    end_to_end = t_done - t0
    return {
        "warmup_job": warmup,
        "job_id": job_id,
        "status": job["status"],
        "completed": job["completed"],
        "failed": job["failed"],
        "submit_seconds": rnd(t_submitted - t0),
        "processing_seconds": rnd(t_done - t_submitted),
        "end_to_end_seconds": rnd(end_to_end),
        "end_to_end_items_per_second": round(n / end_to_end),
        "queue_time_ms": job["queue_time_ms"],
        "server_started_to_finished_seconds": rnd(server_seconds),
        "server_items_per_second": round(n / server_seconds) if server_seconds else None,
        "server_submitted_to_finished_seconds": rnd((finished_at - submitted_at).total_seconds())
        if finished_at and submitted_at
        else None,
        "poll_interval_seconds": poll,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200_000, help="items in the job (default 200000)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--poll", type=float, default=0.1, help="job polling period in s (default 0.1)")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="CONVEYOR_CHUNK_SIZE (default: server's)"
    )
    parser.add_argument(
        "--server-script",
        default=None,
        help="run the server as `python SCRIPT serve …` instead of `python -m conveyor serve …` "
        "(A/B experiments with a patched core; see bench/polling_server.py for the shape)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5000 items")
    args = parser.parse_args(argv)
    n = 5000 if args.quick else args.items
    extra = {"CONVEYOR_CHUNK_SIZE": str(args.chunk_size)} if args.chunk_size else {}

    log(f"plain loop over {n} items")
    baseline = plain_loop(n)
    command = [sys.executable, args.server_script] if args.server_script else None
    conveyor = conveyor_run(n, args.workers, args.poll, extra, command)
    ratio = conveyor["end_to_end_items_per_second"] / baseline["items_per_second"]
    emit(
        {
            "benchmark": "noop_throughput",
            "machine": machine_info(),
            "params": {
                "items": n,
                "workers": args.workers,
                "pipeline": "test-delay",
                "config": {"item_seconds": 0},
                "chunk_size": args.chunk_size or "server default",
                "database": "sqlite (embedded default)",
                "server_script": args.server_script,
            },
            "conveyor": conveyor,
            "plain_loop": baseline,
            "ratio_conveyor_end_to_end_to_plain_loop": round(ratio, 5),
            "ratio_conveyor_server_side_to_plain_loop": round(
                (conveyor["server_items_per_second"] or 0) / baseline["items_per_second"], 5
            ),
            "target_end_to_end_items_per_second": TARGET_ITEMS_PER_SECOND,
            "meets_target": conveyor["end_to_end_items_per_second"] >= TARGET_ITEMS_PER_SECOND,
            "notes": [
                "Wall-clock figures on a shared machine: noisy, compare within one run.",
                "end-to-end = POST with all inputs until the client sees a terminal status.",
                "plain loop = in-process DelayPipeline.process_batch over the same items, best of 3.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
