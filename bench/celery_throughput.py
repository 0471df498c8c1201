"""No-op items/s in distributed mode (PostgreSQL + Celery) against plain Celery, one task per item.

Both sides use the same broker (Redis by default, ``--broker rabbitmq`` for RabbitMQ), a Celery
worker with the same number of prefork processes (``--concurrency``, default 2) and ``acks_late``.

- Conveyor: a fresh PostgreSQL database, ``conveyor serve --workers 0`` (API only) and
  ``conveyor worker --concurrency 2`` on a queue of its own. One ``test-delay`` job of N text
  items with ``item_seconds=0``, measured from the POST to the job seen terminal; a 1-item job
  runs first so that start-up is not measured. Items travel in chunks: one Celery task per chunk.
- Plain Celery: ``plain_celery_app.py``, a task that only counts itself (Redis ``INCR``), sent once
  per item with ``apply_async``; measured from the first send to the counter reaching M.

The figure that matters is ``ratio_conveyor_to_plain_celery`` (target ≥ 20).

    .venv/bin/python bench/celery_throughput.py [--items 100000] [--plain-items 5000] [--broker redis]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    CONVEYOR,
    bench_env,
    emit,
    log,
    machine_info,
    parse_time,
    postgres_database,
    rnd,
    running_server,
    temp_dir,
    wait_terminal,
)
from conveyor.testing import kill_process_group

TARGET_RATIO = 20
BROKERS = {"redis": "redis://127.0.0.1:6379/0", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}
COUNTER_URL = "redis://127.0.0.1:6379/0"
HERE = Path(__file__).resolve().parent


def inputs(n: int) -> list[dict[str, str]]:
    return [{"name": f"item-{i}", "kind": "text", "data": f"payload {i}"} for i in range(n)]


@contextlib.contextmanager
def celery_worker(argv: list[str], env: dict[str, str], log_path: Path, ready_marker: str) -> Iterator[None]:
    """A Celery worker process group, stopped (TERM, then KILL) on exit."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while ready_marker not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)
        yield
    finally:
        kill_process_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_process_group(process.pid)
            process.wait(timeout=10)


def purge(broker_url: str, queue: str) -> None:
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(broker_url, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)


def conveyor_run(n: int, broker_url: str, concurrency: int, database_url: str) -> dict[str, Any]:
    queue = f"conveyor-bench-{uuid.uuid4().hex[:8]}"
    with postgres_database(database_url) as url, temp_dir() as data_dir:
        env = bench_env(
            data_dir,
            database_url=url,
            extra={"CONVEYOR_BROKER_URL": broker_url, "CONVEYOR_QUEUE": queue},
        )
        worker_argv = [
            *CONVEYOR,
            "worker",
            "--concurrency",
            str(concurrency),
            "--queue",
            queue,
            "--loglevel",
            "info",
        ]
        try:
            with (
                running_server(data_dir, workers=0, env=env) as server,
                celery_worker(worker_argv, env, data_dir / "worker.log", " ready."),
                server.client() as client,
            ):
                warm = client.post(
                    "/api/v2/jobs/?start_now=true",
                    json={
                        "name": "warm-up",
                        "pipeline": "test-delay",
                        "inputs": inputs(1),
                        "config": {"item_seconds": 0},
                    },
                )
                warm.raise_for_status()
                wait_terminal(client, warm.json()["id"], interval=0.02, timeout=120)
                log(f"conveyor: submitting {n} items")
                t0 = time.monotonic()
                response = client.post(
                    "/api/v2/jobs/?start_now=true",
                    json={
                        "name": f"noop-{n}",
                        "pipeline": "test-delay",
                        "inputs": inputs(n),
                        "config": {"item_seconds": 0},
                    },
                )
                t_submitted = time.monotonic()
                if response.status_code != 201:
                    raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
                job, t_done = wait_terminal(client, response.json()["id"], interval=0.05)
        finally:
            purge(broker_url, queue)
    started, finished = parse_time(job["started_at"]), parse_time(job["finished_at"])
    server_seconds = (finished - started).total_seconds() if started and finished else None
    end_to_end = t_done - t0
    return {
        "status": job["status"],
        "completed": job["completed"],
        "failed": job["failed"],
        "submit_seconds": rnd(t_submitted - t0),
        "end_to_end_seconds": rnd(end_to_end),
        "items_per_second": round(n / end_to_end),
        "server_items_per_second": round(n / server_seconds) if server_seconds else None,
        "queue_time_ms": job["queue_time_ms"],
    }


def plain_celery_run(n: int, broker_url: str, concurrency: int) -> dict[str, Any]:
    import redis

    queue = f"plain-bench-{uuid.uuid4().hex[:8]}"
    counter_key = f"plain-bench-count-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PLAIN_CELERY_BROKER": broker_url,
        "PLAIN_CELERY_COUNTER_URL": COUNTER_URL,
        "PYTHONPATH": str(HERE),
    }
    argv = [
        sys.executable, "-m", "celery", "-A", "plain_celery_app", "worker",
        "--concurrency", str(concurrency), "--pool", "prefork", "--queues", queue, "--loglevel", "info",
    ]  # fmt: skip
    os.environ["PLAIN_CELERY_BROKER"] = broker_url
    sys.path.insert(0, str(HERE))
    from plain_celery_app import noop

    counter = redis.Redis.from_url(COUNTER_URL)
    try:
        with temp_dir() as tmp, celery_worker(argv, env, tmp / "plain.log", " ready."):
            noop.apply_async(args=(counter_key, "warm-up"), queue=queue)
            deadline = time.monotonic() + 60
            while int(counter.get(counter_key) or 0) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("plain celery warm-up task never ran")
                time.sleep(0.01)
            counter.set(counter_key, 0)
            log(f"plain celery: sending {n} tasks")
            t0 = time.monotonic()
            for i in range(n):
                noop.apply_async(args=(counter_key, f"payload {i}"), queue=queue)
            t_sent = time.monotonic()
            while int(counter.get(counter_key) or 0) < n:
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("plain celery did not finish in 10 minutes")
                time.sleep(0.02)
            t_done = time.monotonic()
    finally:
        counter.delete(counter_key)
        purge(broker_url, queue)
    return {
        "send_seconds": rnd(t_sent - t0),
        "end_to_end_seconds": rnd(t_done - t0),
        "items_per_second": round(n / (t_done - t0)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--items", type=int, default=100_000, help="items in the Conveyor job (default 100000)"
    )
    parser.add_argument(
        "--plain-items", type=int, default=5000, help="tasks sent to plain Celery (default 5000)"
    )
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="worker processes on both sides (default 2)"
    )
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench",
        help="PostgreSQL server and database name prefix (a temporary database is created and dropped)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5000 items vs 500 tasks")
    args = parser.parse_args(argv)
    n, m = (5000, 500) if args.quick else (args.items, args.plain_items)
    broker_url = BROKERS[args.broker]

    plain = plain_celery_run(m, broker_url, args.concurrency)
    log(f"plain celery: {plain['items_per_second']} items/s")
    conveyor = conveyor_run(n, broker_url, args.concurrency, args.database_url)
    log(f"conveyor: {conveyor['items_per_second']} items/s")
    ratio = conveyor["items_per_second"] / plain["items_per_second"]
    emit(
        {
            "benchmark": "celery_throughput",
            "machine": machine_info(),
            "params": {
                "conveyor_items": n,
                "plain_celery_tasks": m,
                "broker": args.broker,
                "concurrency": args.concurrency,
                "database": "postgresql",
                "pipeline": "test-delay, item_seconds=0",
            },
            "conveyor": conveyor,
            "plain_celery": plain,
            "ratio_conveyor_to_plain_celery": round(ratio, 2),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
            "notes": [
                "Same broker, same worker process count, acks_late on both sides.",
                "Conveyor: POST with every input until the job is seen terminal (includes submit).",
                "Plain Celery: first apply_async until the last task has counted itself.",
            ],
        }
    )


if __name__ == "__main__":
    main()
