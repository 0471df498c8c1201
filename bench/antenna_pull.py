"""Antenna's pull protocol (async_api): results/s with 2 concurrent pullers, against local workers.

One server (embedded mode, SQLite unless ``--database-url``, 2 local workers). A pull service
registers a pipeline in the default project, a job of ``--items`` small PNG inputs is submitted
for it, and ``--pullers`` threads speak the ADC worker's wire exactly (``POST /jobs/{id}/tasks/``
with ``batch_size`` 24, then ``POST /jobs/{id}/result/`` with one no-op PipelineResultsResponse
per task: the image listed, no detections), each with its own keep-alive client, until the job
hands out no more tasks. Like the ADC's ResultPoster, each puller posts in background threads
(``--post-ahead`` posts in flight, default 2) while it reserves the next batch. With
``--download`` every task's ``image_url`` is fetched too (a plain,
keyless GET of a signed media URL), as the real worker does.

- results/s = items / (first reservation -> job seen terminal), measured by the client;
- results per server CPU-second: items / the API process's CPU time over the same span (from
  ``/proc``): the protocol's cost, which moves much less than results/s on a busy machine;
- per call: the p50/p99 of the tasks and result POSTs.

Baseline in the same run: the same number of the same inputs through the server's 2 local
workers on ``test-delay`` with ``item_seconds=0`` (Conveyor's own no-op path: chunks, leases,
bulk write-back), items/s end to end. Target: >= 1,000 results/s on 2 cores (Antenna reports
0.3-0.7 results/s with 8 workers, its issue #1256).

    .venv/bin/python bench/antenna_pull.py [--items 20000] [--pullers 2] [--post-ahead 2] [--download]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from common import (
    bench_env,
    emit,
    log,
    machine_info,
    postgres_database,
    rnd,
    running_server,
    summarize,
    temp_dir,
    wait_terminal,
)

TARGET_RESULTS_PER_SECOND = 1000
ANTENNA_REPORTED = "0.3-0.7 results/s with 8 workers, its issue #1256"
SLUG = "bench-moths"


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def inputs(n: int) -> list[dict[str, str]]:
    data = tiny_png()
    return [{"name": f"img-{i}.png", "kind": "base64", "data": data} for i in range(n)]


def noop_result(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline": SLUG,
        "algorithms": {},
        "total_time": 0.0,
        "source_images": [{"id": task["image_id"], "url": task["image_url"]}],
        "detections": [],
        "config": {},
    }


def puller(
    base: str,
    key: str,
    job_id: int,
    download: bool,
    post_ahead: int,
    calls: dict[str, list[float]],
    errors: list[str],
) -> None:
    """One ADC-like worker loop: reserve 24, (download,) hand the results to a poster, until no task
    is handed out. Like the ADC's ResultPoster, up to ``post_ahead`` posts run in background
    threads while the next batch is reserved (0: post in line)."""
    headers = {"Authorization": f"Token {key}"}
    with (
        httpx.Client(headers=headers, timeout=60) as http,
        httpx.Client(timeout=60) as plain,
        ThreadPoolExecutor(max_workers=max(post_ahead, 1)) as posters,
    ):

        def post(results: list[dict[str, Any]]) -> None:
            t0 = time.perf_counter()
            response = http.post(f"{base}/jobs/{job_id}/result/", json={"results": results})
            calls["result"].append(time.perf_counter() - t0)
            if response.status_code != 200:
                errors.append(f"result {response.status_code}: {response.text[:200]}")

        pending: list[Future[None]] = []
        while not errors:
            t0 = time.perf_counter()
            response = http.post(f"{base}/jobs/{job_id}/tasks/", json={"batch_size": 24})
            calls["tasks"].append(time.perf_counter() - t0)
            if response.status_code != 200:
                errors.append(f"tasks {response.status_code}: {response.text[:200]}")
                break
            tasks = response.json()["tasks"]
            if not tasks:
                break
            if download:
                for task in tasks:
                    plain.get(task["image_url"]).raise_for_status()
            results = [{"reply_subject": t["reply_subject"], "result": noop_result(t)} for t in tasks]
            if post_ahead <= 0:
                post(results)
                continue
            pending = [f for f in pending if not f.done()]
            while len(pending) >= post_ahead:
                wait(pending, return_when=FIRST_COMPLETED)
                pending = [f for f in pending if not f.done()]
            pending.append(posters.submit(post, results))
        wait(pending)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pull_run(
    client: httpx.Client,
    base: str,
    key: str,
    n: int,
    pullers: int,
    download: bool,
    server_pid: int,
    post_ahead: int,
) -> dict[str, Any]:
    projects = client.get("/api/v2/projects/").json()
    project_id = next(p["id"] for p in projects if p["slug"] == "default")
    registration = client.post(
        f"/api/v2/projects/{project_id}/pipelines/",
        json={
            "processing_service_name": "bench ADC",
            "pipelines": [
                {"name": "Bench moths", "slug": SLUG, "version": 1, "description": "", "stages": []}
            ],
        },
    )
    registration.raise_for_status()
    log(f"submitting {n} items for the pull pipeline")
    response = client.post(
        "/api/v2/jobs/?start_now=true", json={"name": f"pull-{n}", "pipeline": SLUG, "inputs": inputs(n)}
    )
    if response.status_code != 201:
        raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
    job_id = response.json()["id"]
    calls: dict[str, list[float]] = {"tasks": [], "result": []}
    errors: list[str] = []
    threads = [
        threading.Thread(target=puller, args=(base, key, job_id, download, post_ahead, calls, errors))
        for _ in range(pullers)
    ]
    log(f"job {job_id}: {pullers} pullers start")
    cpu0 = cpu_seconds(server_pid)
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job, t_done = wait_terminal(client, job_id, interval=0.05)
    elapsed = t_done - t0
    cpu1 = cpu_seconds(server_pid)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    if errors:
        raise RuntimeError(f"pullers failed: {errors[:3]}")
    return {
        "job_id": job_id,
        "status": job["status"],
        "completed": job["completed"],
        "failed": job["failed"],
        "seconds": rnd(elapsed),
        "results_per_second": round(job["completed"] / elapsed),
        # The API process's own CPU time: what the protocol costs, whatever else the machine does.
        "server_cpu_seconds": rnd(cpu),
        "results_per_server_cpu_second": round(job["completed"] / cpu) if cpu else None,
        "tasks_calls": len(calls["tasks"]),
        "result_calls": len(calls["result"]),
        "tasks_ms": summarize([c * 1000 for c in calls["tasks"]]),
        "result_ms": summarize([c * 1000 for c in calls["result"]]),
    }


def local_run(client: httpx.Client, n: int) -> dict[str, Any]:
    warm = client.post(
        "/api/v2/jobs/?start_now=true",
        json={
            "name": "warm-up",
            "pipeline": "test-delay",
            "inputs": inputs(1),
            "config": {"item_seconds": 0},
        },
    )
    wait_terminal(client, warm.json()["id"])
    log(f"baseline: {n} items through the local workers")
    t0 = time.monotonic()
    response = client.post(
        "/api/v2/jobs/?start_now=true",
        json={
            "name": f"local-{n}",
            "pipeline": "test-delay",
            "inputs": inputs(n),
            "config": {"item_seconds": 0},
        },
    )
    response.raise_for_status()
    t_submitted = time.monotonic()
    job, t_done = wait_terminal(client, response.json()["id"], interval=0.05)
    return {
        "status": job["status"],
        "completed": job["completed"],
        "submit_seconds": rnd(t_submitted - t0),
        "processing_seconds": rnd(t_done - t_submitted),
        "items_per_second_after_submit": round(job["completed"] / (t_done - t_submitted)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--pullers", type=int, default=2)
    parser.add_argument("--download", action="store_true", help="Also GET every task's image_url.")
    parser.add_argument(
        "--post-ahead",
        type=int,
        default=2,
        help="Result posts each puller keeps in flight while reserving the next batch (the ADC's "
        "ResultPoster runs 2 poster threads); 0 posts in line.",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--quick", action="store_true", help="5,000 items.")
    args = parser.parse_args(argv)
    n = 5000 if args.quick else args.items
    with temp_dir() as data_dir:
        database = "sqlite"
        with postgres_database(args.database_url) if args.database_url else contextlib.nullcontext() as url:
            extra = {"CONVEYOR_DATABASE_URL": url} if url else {}
            if url:
                database = "postgresql"
            env = bench_env(data_dir, extra=extra)
            with running_server(data_dir, workers=2, env=env) as server, server.client() as client:
                base = f"{server.url}/api/v2"
                local = local_run(client, n)
                pulled = pull_run(
                    client, base, server.key, n, args.pullers, args.download, server.pid, args.post_ahead
                )
    ratio = pulled["results_per_second"] / max(local["items_per_second_after_submit"], 1)
    emit(
        {
            "machine": machine_info(),
            "params": {
                "items": n,
                "pullers": args.pullers,
                "batch_size": 24,
                "download": args.download,
                "post_ahead": args.post_ahead,
                "database": database,
            },
            "pull": pulled,
            "local_workers_baseline": local,
            "pull_over_local": round(ratio, 2),
            "target_results_per_second": TARGET_RESULTS_PER_SECOND,
            "antenna_reported": ANTENNA_REPORTED,
            "meets_target": pulled["results_per_second"] >= TARGET_RESULTS_PER_SECOND,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
