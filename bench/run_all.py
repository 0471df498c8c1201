"""Run every benchmark (one after another, each in its own process), collect one JSON report and
render it as Markdown with plots.

The report goes to stdout and to ``bench/results/<date>-<time>.json`` (git-ignored), and is
rendered by ``report.py``: a full run writes ``docs/benchmarks.md`` and ``docs/benchmarks/*.png``
(an ``--only`` / ``--skip`` run replaces just its own sections there, see ``report.py --splice``);
a ``--quick`` run (small sizes, a few minutes) writes them next to its JSON in ``bench/results/``
so that it never replaces the published figures. A benchmark that fails is reported with its
error and the others still run.

    .venv/bin/python bench/run_all.py [--quick] [--only noop_throughput,history] [--skip soak]
        [--soak-minutes 10] [--history-max 1000000] [--docs DIR | --no-docs]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import BENCH_DIR, ROOT, emit, log, machine_info

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"

# name -> (script, arguments for `make bench`, arguments for --quick); the order of the run
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "noop_throughput": ("noop_throughput.py", ["--items", "100000"], ["--quick"]),
    "submit_latency": ("submit_latency.py", ["--jobs", "100", "--poll-jobs", "20"], ["--quick"]),
    "celery_throughput": (
        "celery_throughput.py",
        ["--items", "100000", "--plain-items", "5000"],
        ["--quick"],
    ),
    "sse_latency": ("sse_latency.py", ["--jobs", "100", "--subscribers", "50"], ["--quick"]),
    "api_reads": ("api_reads.py", ["--jobs", "200", "--seconds", "20", "--concurrency", "8"], ["--quick"]),
    "api_reads_postgresql": (
        "api_reads.py",
        ["--jobs", "200", "--seconds", "20", "--concurrency", "8", "--database-url", DEFAULT_POSTGRES],
        ["--quick", "--database-url", DEFAULT_POSTGRES],
    ),
    "conditional_gets": ("conditional_gets.py", ["--jobs", "100", "--requests", "2000"], ["--quick"]),
    "load": ("load.py", ["--pollers", "200", "--seconds", "120"], ["--quick"]),
    "load_postgresql": (
        "load.py",
        ["--pollers", "200", "--seconds", "120", "--database-url", DEFAULT_POSTGRES],
        ["--quick", "--database-url", DEFAULT_POSTGRES],
    ),
    "model_throughput": ("model_throughput.py", ["--items", "96"], ["--quick"]),
    "embedding_throughput": (
        "model_throughput.py",
        ["--pipeline", "text-embedding", "--items", "600"],
        ["--pipeline", "text-embedding", "--quick"],
    ),
    "history": ("history.py", ["--jobs", "100000", "--repeat", "15"], ["--quick"]),
    "history_postgresql": (
        "history.py",
        ["--jobs", "1000000", "--reuse-seed", "--repeat", "15", "--database-url", DEFAULT_POSTGRES],
        ["--quick", "--database-url", DEFAULT_POSTGRES],
    ),
    "history_under_load": (
        "history.py",
        ["--jobs", "100000", "--reuse-seed", "--repeat", "15", "--with-load", "200"],
        ["--quick", "--with-load", "50"],
    ),
    "history_under_load_postgresql": (
        "history.py",
        [
            *("--jobs", "1000000", "--reuse-seed", "--repeat", "15", "--with-load", "200"),
            *("--database-url", DEFAULT_POSTGRES),
        ],
        ["--quick", "--with-load", "50", "--database-url", DEFAULT_POSTGRES],
    ),
    "history_scale": (
        "history_scale.py",
        ["--sizes", "10000,100000,1000000", "--reuse-seed"],
        ["--quick"],
    ),
    "history_scale_sqlite": (
        "history_scale.py",
        ["--sqlite", "--sizes", "10000,100000", "--reuse-seed"],
        ["--sqlite", "--quick"],
    ),
    "soak": ("soak.py", ["--minutes", "10"], ["--quick"]),
    "manifest_scale": ("manifest_scale.py", ["--entries", "1000000"], ["--quick"]),
    "submit_by_reference": ("submit_by_reference.py", ["--urls", "3000"], ["--quick"]),
    "fetch_throughput": ("fetch_throughput.py", ["--items", "20000"], ["--quick"]),
    "model_by_reference": ("model_by_reference.py", ["--images", "96"], ["--quick"]),
    "device_throughput": ("device_throughput.py", ["--images", "64", "--texts", "400"], ["--quick"]),
    "antenna_pull": ("antenna_pull.py", ["--items", "20000"], ["--quick"]),
    "http_workers": ("http_workers.py", ["--items", "30000", "--rounds", "2"], ["--quick"]),
}


def run_one(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    script = BENCHMARKS[name][0]
    command = [sys.executable, str(BENCH_DIR / script), *args]
    log(f"{name}: {script} {' '.join(args)}")
    started = time.monotonic()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "script": script, "args": args}
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode}", "script": script, "args": args, "seconds": seconds}
    try:
        figures: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        return {
            "error": f"output is not JSON: {exc}",
            "script": script,
            "stdout": done.stdout[-2000:],
            "seconds": seconds,
        }
    figures.pop("machine", None)  # once, at the top of the report
    figures["script"] = script
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
    for name, prefix in (("model_throughput", "imagenet"), ("embedding_throughput", "embedding")):
        model = results.get(name, {})
        if "conveyor" in model:
            out[f"{prefix}_conveyor_items_per_second"] = model["conveyor"]["best"][
                "end_to_end_items_per_second"
            ]
            out[f"{prefix}_plain_loop_items_per_second"] = model["plain_loop"]["items_per_second"]
            out[f"{prefix}_ratio"] = model["ratio_end_to_end"]
            out[f"{prefix}_meets_target"] = model["meets_target"]
            out[f"{prefix}_batch_size"] = model["params"]["batch_size"]
            out[f"{prefix}_model_load_ms_per_worker"] = model["conveyor"]["model_load_ms_per_worker"]
    reads = results.get("api_reads", {})
    if "v2_job" in reads:
        out["api_reads_v2_requests_per_second"] = reads["v2_job"]["requests_per_second"]
        out["api_reads_modzy_requests_per_second"] = reads["modzy_job"]["requests_per_second"]
        out["api_reads_livez_requests_per_second"] = reads["livez_baseline"]["requests_per_second"]
        out["api_reads_share_of_livez"] = reads.get("share_of_baseline")
        out["api_reads_meets_target"] = reads.get("met")
    conditional = results.get("conditional_gets", {})
    if "detail" in conditional:
        out["conditional_gets_speedup"] = {
            name: conditional[name]["speedup"]
            for name in ("detail", "items", "history")
            if name in conditional
        }
    scale = results.get("history_scale", {})
    if "sizes" in scale:
        out["history_scale_sizes"] = scale["params"]["sizes"]
        out["history_scale_median_p50_ms"] = [
            scale["sizes"][str(n)]["summary"]["http_first_page_p50_ms_median_over_filters"]
            for n in scale["params"]["sizes"]
        ]
        out["history_scale_flat"] = scale["flat"]
    soak = results.get("soak", {})
    if "rss" in soak:
        out["soak_total_rss_mb_start_end"] = [
            soak["rss"]["start"]["total_mb"],
            soak["rss"]["end"]["total_mb"],
        ]
        out["soak_errors"] = soak["errors_total"]
        out["soak_p99_ms"] = {k: v.get("p99") for k, v in soak["latency_ms"].items()}
    manifest = results.get("manifest_scale", {})
    if "met" in manifest:
        out["manifest_entries"] = manifest["params"]["entries"]
        out["manifest_submit_seconds"] = manifest["submit_seconds"]
        out["manifest_server_rss_growth_mb"] = manifest["rss"]["server_growth_mb"]
        out["manifest_db_bytes_per_item"] = manifest["database"]["growth_bytes_per_item"]
        out["manifest_job_seconds"] = manifest["job_end_to_end_seconds"]
        out["manifest_workers_fetched"] = manifest["workers_fetched"]
    submit = results.get("submit_by_reference", {})
    if "by_reference" in submit:
        out["submit_by_reference_seconds"] = submit["by_reference"]["best_post_seconds"]
        out["submit_at_submit_seconds"] = submit["at_submit"]["best_post_seconds"]
    for name in ("fetch_throughput", "model_by_reference"):
        figures = results.get(name, {})
        if "ratio_end_to_end" in figures:
            out[f"{name}_ratio"] = figures["ratio_end_to_end"]
            out[f"{name}_meets_target"] = figures["meets_target"]
    http = results.get("http_workers", {})
    if "ratio_http_to_local_server_side" in http:
        out["http_workers_items_per_second"] = http["http"]["server_items_per_second"]
        out["http_workers_ratio_to_local"] = http["ratio_http_to_local_server_side"]
        out["http_workers_meets_target"] = http["meets_target"]
    history = results.get("history", {})
    if "summary" in history:
        out["history_jobs"] = history["params"]["jobs"]
        out.update({f"history_{k}": v for k, v in history["summary"].items()})
    return out


def make_report(
    results: dict[str, Any], started: datetime, machine: dict[str, Any], quick: bool
) -> dict[str, Any]:
    return {
        "report": "conveyor benchmarks",
        "mode": "quick" if quick else "full",
        "machine": machine,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "headline": headline(results),
        "results": results,
        "failed": [name for name, figures in results.items() if "error" in figures],
    }


def arguments(name: str, args: argparse.Namespace) -> list[str]:
    """The command-line arguments of one benchmark under this run's options."""
    _, full, quick = BENCHMARKS[name]
    out = list(quick if args.quick else full)
    if args.database_url and name in ("history", "history_scale", "celery_throughput"):
        out += ["--database-url", args.database_url]
    if args.database_url and name in (
        "load_postgresql",
        "history_postgresql",
        "history_under_load_postgresql",
    ):
        out[out.index("--database-url") + 1] = args.database_url
    if name == "history_scale" and args.history_max is not None:
        out += ["--max-jobs", str(args.history_max)]
    if name == "soak" and args.soak_minutes is not None:
        out += ["--seconds", str(args.soak_minutes * 60)]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with small sizes (a few minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server for history.py (else SQLite), history_scale.py, celery_throughput.py "
        "and load_postgresql"
        "(their default: postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench)",
    )
    parser.add_argument(
        "--history-max", type=int, default=None, help="largest history size (default 1000000)"
    )
    parser.add_argument(
        "--soak-minutes", type=float, default=None, help="soak length (default 10; quick 0.75)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="per benchmark, in s (default 3600)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="render here (default: docs/ for a full run, next to the JSON for --quick)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not render Markdown and plots")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    skipped = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in [*wanted, *skipped] if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    wanted = [n for n in wanted if n not in skipped]

    started = datetime.now(UTC)
    machine = machine_info()
    results = {name: run_one(name, arguments(name, args), args.timeout) for name in wanted}
    report = make_report(results, started, machine, args.quick)
    stem = f"{started:%Y-%m-%d-%H%M%S}{'-quick' if args.quick else ''}"
    folder = BENCH_DIR / "results"
    if not args.no_save:
        folder.mkdir(exist_ok=True)
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"report written to {path}")
    if not args.no_docs:
        from report import render, splice

        target = args.docs or (folder / stem if args.quick else ROOT / "docs")
        partial = len(wanted) < len(BENCHMARKS) and (target / "benchmarks.md").exists()
        if partial and not args.quick and args.docs is None:
            # An --only/--skip run: its sections replace theirs in the published page.
            log(f"spliced into {splice(report, target)}")
        else:
            log(f"rendered {render(report, target)}")
    emit(report)


if __name__ == "__main__":
    sys.exit(main())
