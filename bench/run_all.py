"""Run every benchmark (one after another, each in its own process) and collect one JSON report.

The report goes to stdout and to ``bench/results/<date>-<time>.json`` (git-ignored). The
defaults finish in a few minutes on 2 cores; ``--quick`` is a smoke run of well under a minute.
A benchmark that fails is reported with its error and the others still run.

    .venv/bin/python bench/run_all.py [--quick] [--only noop_throughput,history]
                                      [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import BENCH_DIR, emit, log, machine_info

# name -> (arguments for `make bench`, arguments for --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "noop_throughput": (["--items", "100000"], ["--quick"]),
    "submit_latency": (["--jobs", "100", "--poll-jobs", "20"], ["--quick"]),
    "history": (["--jobs", "100000", "--repeat", "15"], ["--quick"]),
    "celery_throughput": (["--items", "100000", "--plain-items", "5000"], ["--quick"]),
    "sse_latency": (["--jobs", "100", "--subscribers", "50"], ["--quick"]),
    "model_throughput": (["--images", "96"], ["--quick"]),
}


def run_one(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *args]
    log(f"{name}: {' '.join(args)}")
    started = time.monotonic()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "args": args}
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode}", "args": args, "seconds": seconds}
    try:
        figures: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"output is not JSON: {exc}", "stdout": done.stdout[-2000:], "seconds": seconds}
    figures.pop("machine", None)  # once, at the top of the report
    figures["args"] = args
    figures["seconds"] = seconds
    log(f"{name}: done in {seconds} s")
    return figures


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The few figures the README quotes, pulled out of the full results."""
    out: dict[str, Any] = {}
    noop = results.get("noop_throughput", {})
    if "conveyor" in noop:
        out["noop_items"] = noop["params"]["items"]
        out["noop_end_to_end_items_per_second"] = noop["conveyor"]["end_to_end_items_per_second"]
        out["noop_server_items_per_second"] = noop["conveyor"]["server_items_per_second"]
        out["noop_submit_seconds"] = noop["conveyor"]["submit_seconds"]
        out["noop_plain_loop_items_per_second"] = noop["plain_loop"]["items_per_second"]
        out["noop_meets_20k_target"] = noop["meets_target"]
    latency = results.get("submit_latency", {})
    if "notified" in latency:
        out["queue_time_ms_p50_p99"] = [latency["notified"]["queue_time_ms"].get(p) for p in ("p50", "p99")]
        out["client_post_to_started_ms_p50_p99"] = [
            latency["notified"]["client_post_to_started_ms"].get(p) for p in ("p50", "p99")
        ]
        if latency.get("polling_baseline"):
            out["polling_baseline_queue_time_ms_p50_p99"] = [
                latency["polling_baseline"]["queue_time_ms"].get(p) for p in ("p50", "p99")
            ]
    celery = results.get("celery_throughput", {})
    if "conveyor" in celery:
        out["celery_conveyor_items_per_second"] = celery["conveyor"]["items_per_second"]
        out["celery_plain_one_task_per_item_per_second"] = celery["plain_celery"]["items_per_second"]
        out["celery_ratio"] = celery["ratio_conveyor_to_plain_celery"]
        out["celery_meets_20x_target"] = celery["meets_target"]
    model = results.get("model_throughput", {})
    if "conveyor" in model:
        out["imagenet_conveyor_images_per_second"] = model["conveyor"]["best"]["end_to_end_images_per_second"]
        out["imagenet_plain_loop_images_per_second"] = model["plain_loop"]["images_per_second"]
        out["imagenet_ratio"] = model["ratio_end_to_end"]
        out["imagenet_batch_size"] = model["params"]["batch_size"]
        out["imagenet_model_load_ms_per_worker"] = model["conveyor"]["model_load_ms_per_worker"]
    history = results.get("history", {})
    if "summary" in history:
        out["history_jobs"] = history["params"]["jobs"]
        out.update({f"history_{k}": v for k, v in history["summary"].items()})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with small sizes (< 60 s)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--database-url", default=None, help="passed to history.py (PostgreSQL)")
    parser.add_argument("--timeout", type=float, default=1800, help="per benchmark, in s (default 1800)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in wanted if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    started = datetime.now(UTC)
    machine = machine_info()
    results: dict[str, Any] = {}
    for name in wanted:
        full, quick = BENCHMARKS[name]
        extra = ["--database-url", args.database_url] if args.database_url and name == "history" else []
        results[name] = run_one(name, (quick if args.quick else full) + extra, args.timeout)
    report = {
        "report": "conveyor benchmarks",
        "mode": "quick" if args.quick else "full",
        "machine": machine,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "headline": headline(results),
        "results": results,
        "failed": [name for name, figures in results.items() if "error" in figures],
    }
    if not args.no_save:
        folder = BENCH_DIR / "results"
        folder.mkdir(exist_ok=True)
        path = folder / f"{started:%Y-%m-%d-%H%M%S}{'-quick' if args.quick else ''}.json"
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"report written to {path}")
    emit(report)


if __name__ == "__main__":
    sys.exit(main())
