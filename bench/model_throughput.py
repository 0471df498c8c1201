"""Images/s of ``imagenet-classifier`` through Conveyor against a plain in-process loop over the same
model and images, in the same run (issue 4's target: ratio >= 0.95).

Conveyor side: ``conveyor serve`` (embedded mode, SQLite, ``--workers`` local worker processes,
chunks small enough that every worker gets a share), a warm-up job that makes every worker load
the model (its load time is reported, not counted), then one job of N base64 images: end-to-end
images/s is N over POST -> job seen terminal; server-side images/s is N over the job's
``started_at`` -> ``finished_at``. Conveyor's work includes a 128 px JPEG sample per image.

Plain loop: this process decodes, preprocesses and classifies the same N images in batches of
the same size with the same weights, best of ``--repeat``, once with torch on every core (what a
user's own loop does by default) and once on one thread (faster when the machine is busy: spare
threads spin against other processes); the better of the two is the baseline. A sweep of the
plain loop over batch sizes shows what the default batch size is worth.

    .venv/bin/python bench/model_throughput.py [--images 96] [--batch-size 4] [--workers 2] [--sweep 1,4,8,16]
"""

from __future__ import annotations

import argparse
import base64
import math
import os
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

TARGET_RATIO = 0.95


def images(n: int) -> list[tuple[str, bytes]]:
    from conveyor import photos

    bundled = [p for p in photos.bundled()]
    return [(f"{i:05d}-{bundled[i % len(bundled)].name}", bundled[i % len(bundled)].data) for i in range(n)]


class PlainLoop:
    """The model with nothing around it: decode -> preprocess -> forward -> top-k, in batches."""

    def __init__(self) -> None:
        started = time.perf_counter()
        from conveyor.pipelines.imagenet import ImagenetClassifier

        os.environ.pop("CONVEYOR_MODEL_THREADS", None)  # torch on every core
        self.pipeline = ImagenetClassifier(Path("."))
        self.pipeline.load()
        self.load_seconds = time.perf_counter() - started
        self.torch = self.pipeline.torch

    def run(self, data: list[tuple[str, bytes]], batch_size: int, threads: int) -> float:
        import numpy as np

        from conveyor.pipelines import imaging
        from conveyor.pipelines.imagenet import preprocess

        self.torch.set_num_threads(threads)
        started = time.perf_counter()
        for first in range(0, len(data), batch_size):
            batch = data[first : first + batch_size]
            arrays = np.stack([preprocess(imaging.open_rgb(raw)) for _, raw in batch])
            with self.torch.inference_mode():
                probabilities = self.torch.softmax(self.pipeline.model(self.torch.from_numpy(arrays)), dim=1)
                probabilities.topk(5, dim=1)
        return len(data) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (plain loop, Conveyor); best counts")
    parser.add_argument("--sweep", default="1,4,8,16", help="plain-loop batch sizes to compare ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="24 images, one round, no sweep")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeat, args.sweep = 24, 1, ""
    from conveyor.pipelines.imagenet import ImagenetClassifier

    batch_size = args.batch_size or ImagenetClassifier.batch_size
    data = images(args.images)
    cores = os.cpu_count() or 1
    plain = PlainLoop()
    plain.run(data[: batch_size * 2], batch_size, cores)  # warm the kernels
    chunk = max(1, math.ceil(len(data) / (args.workers * 4)))  # every worker busy until the end
    inputs = [{"name": name, "kind": "base64", "data": base64.b64encode(raw).decode()} for name, raw in data]
    body = {"pipeline": "imagenet-classifier", "config": {"batch_size": batch_size}}
    by_threads: dict[int, list[float]] = {t: [] for t in sorted({cores, 1}, reverse=True)}
    runs: list[dict[str, Any]] = []
    with temp_dir() as folder:
        env = bench_env(folder, extra={"CONVEYOR_CHUNK_SIZE": str(chunk)})
        with running_server(folder, workers=args.workers, env=env) as server, server.client() as client:
            warm = client.post(
                "/api/v2/jobs/?start_now=true",
                json={**body, "name": "warm-up", "inputs": inputs[: chunk * args.workers]},
            )
            warm.raise_for_status()
            warm_job, _ = wait_terminal(client, warm.json()["id"], timeout=600)
            load_ms = [
                int(line["message"].split("loaded in ")[1].split(" ms")[0])
                for line in client.get(f"/api/v2/jobs/{warm_job['id']}/logs/").json()["results"]
                if "model loaded in" in line["message"]
            ]
            log(f"warm-up {warm_job['status']}; model load times {load_ms} ms")
            # Rounds alternate the two sides (the idle server costs nothing), so that a change in
            # the machine's load over the run hits both alike.
            for attempt in range(args.repeat):
                for threads, measured in by_threads.items():
                    measured.append(plain.run(data, batch_size, threads))
                runs.append(conveyor_run(client, body, inputs, f"measured-{attempt}"))
                log(f"round {attempt + 1}: plain {by_threads}, conveyor {runs[-1]}")
    threads, plain_runs = max(by_threads.items(), key=lambda kv: max(kv[1]))
    sizes = [int(s) for s in args.sweep.split(",") if s.strip()]
    sweep = {size: rnd(plain.run(data, size, threads), 2) for size in sizes}
    plain_best = max(plain_runs)
    best = max(runs, key=lambda r: r["end_to_end_images_per_second"])
    ratio = best["end_to_end_images_per_second"] / plain_best
    emit(
        {
            "benchmark": "model_throughput",
            "pipeline": "imagenet-classifier",
            "machine": machine_info(),
            "params": {"images": args.images, "batch_size": batch_size, "repeat": args.repeat},
            "plain_loop": {
                "images_per_second": rnd(plain_best, 2),
                "torch_threads": threads,
                "images_per_second_by_threads": {t: [rnd(r, 2) for r in v] for t, v in by_threads.items()},
                "batch_size_sweep_images_per_second": sweep,
                "model_load_ms": round(plain.load_seconds * 1000),
            },
            "conveyor": {
                "workers": args.workers,
                "chunk_size": chunk,
                "model_load_ms_per_worker": load_ms,
                "runs": runs,
                "best": best,
            },
            "ratio_end_to_end": rnd(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        }
    )


def conveyor_run(
    client: Any, body: dict[str, Any], inputs: list[dict[str, str]], name: str
) -> dict[str, Any]:
    started = time.monotonic()
    response = client.post("/api/v2/jobs/?start_now=true", json={**body, "name": name, "inputs": inputs})
    response.raise_for_status()
    job, seen = wait_terminal(client, response.json()["id"], timeout=3600, interval=0.05)
    end_to_end = seen - started
    began, ended = parse_time(job["started_at"]), parse_time(job["finished_at"])
    server_seconds = (ended - began).total_seconds() if began and ended else float("nan")
    return {
        "status": job["status"],
        "completed": job["completed"],
        "end_to_end_seconds": rnd(end_to_end),
        "end_to_end_images_per_second": rnd(len(inputs) / end_to_end, 2),
        "server_images_per_second": rnd(len(inputs) / server_seconds, 2),
    }


if __name__ == "__main__":
    sys.exit(main())
