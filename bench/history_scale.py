"""History latency as the history grows: the same measurements as ``history.py`` at several sizes
(default 10 000, 100 000 and 1 000 000 jobs) in one run, on PostgreSQL by default.

Each size gets a fresh temporary database seeded from scratch (so every size is a realistic
history, ids growing with ``created_at``; seeding 10k + 100k + 1M costs only 11 % more than 1M
alone). Per size: first page of every filter and ordering over HTTP and in-process, deep keyset
pages, and a deep position by cursor and by ``offset`` (the baseline: what the page would cost
without keyset pagination). Query plans are kept for the largest size only.

"Flat" is read as: the median over filters of the first-page p50 at the largest size is at most
``FLAT_FACTOR`` times that at the smallest. Issue 5's target is a first-page p99 below 50 ms for
any filter at 1M jobs on PostgreSQL (checked at the store level, in-process, and over HTTP).

    .venv/bin/python bench/history_scale.py [--sizes 10000,100000,1000000] [--max-jobs 100000]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench | --sqlite]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import history
from common import emit, log, machine_info, postgres_database, temp_dir

TARGET_P99_MS = 50.0
FLAT_FACTOR = 1.5
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"


def one_size(jobs: int, args: argparse.Namespace, plans: bool) -> dict[str, Any]:
    options = history.build_parser().parse_args(
        [
            "--jobs",
            str(jobs),
            "--repeat",
            str(args.repeat),
            "--chain-pages",
            str(args.chain_pages),
            "--seed",
            str(args.seed),
            *([] if plans else ["--no-plans"]),
            *(["--analyze"] if args.sqlite else []),
            *(["--reuse-seed"] if args.reuse_seed else []),
            *(["--database-url", args.database_url] if not args.sqlite else []),
            *(["--under-load", args.under_load] if args.under_load else []),
        ]
    )
    if args.reuse_seed:
        with history.database_for(options) as (url, data_dir, _):
            return history.run(options, url, data_dir)
    with temp_dir() as data_dir:
        if args.sqlite:
            return history.run(options, None, data_dir)
        with postgres_database(args.database_url) as url:
            return history.run(options, url, data_dir)


def condensed(figures: dict[str, Any]) -> dict[str, Any]:
    """What the report plots per size: p50/p99 per case, HTTP and store level, and the deep page."""
    deep = figures["http_deep_position"]["no filter"]
    return {
        "seed_seconds": figures["seed"].get("seconds"),
        "summary": figures["summary"],
        "http_first_page_ms": {
            label: {k: v[k] for k in ("p50", "p99", "count")}
            for label, v in figures["http_first_page_ms"].items()
        },
        "store_first_page_ms": {
            label: {k: v["page_ms"][k] for k in ("p50", "p99")}
            for label, v in figures["store_first_page"].items()
        },
        "store_worst_p99_ms": max(v["page_ms"]["p99"] for v in figures["store_first_page"].values()),
        "http_worst_p99_ms": figures["summary"]["http_first_page_worst_p99_ms"],
        "deep_position": deep.get("position"),
        "deep_keyset_ms": deep.get("keyset_cursor_ms"),
        "deep_offset_ms": deep.get("offset_ms"),
        "keyset_next_pages_p50_ms": {
            label: chain.get("p50") for label, chain in figures["http_keyset_next_pages_ms"].items()
        },
        "worst": figures["summary"]["worst"],
        "worst_p99_ms_any_shape": figures["summary"]["worst_p99_ms_any_shape"],
        "http_deep_keyset_ms": {
            label: {k: v[k] for k in ("p50", "p99")}
            for label, v in figures["http_deep_keyset_ms"].items()
            if "p99" in v
        },
        "store_deep_keyset_ms": {
            label: {k: v["deep_keyset_page_ms"][k] for k in ("p50", "p99")}
            for label, v in figures["store_first_page"].items()
            if "deep_keyset_page_ms" in v
        },
        "http_modzy_ms": figures["http_modzy_ms"],
        "keyset_next_pages_worst_p99_ms": max(
            (chain.get("p99", 0) for chain in figures["http_keyset_next_pages_ms"].values()), default=None
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="comma-separated job counts (default 10k,100k,1M)"
    )
    parser.add_argument("--max-jobs", type=int, default=None, help="leave out sizes above this")
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per case (default 15)")
    parser.add_argument("--chain-pages", type=int, default=20, help="`next` links followed (default 20)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL server and database name prefix (a temporary database per size, dropped after)",
    )
    parser.add_argument("--sqlite", action="store_true", help="measure SQLite (embedded) instead")
    parser.add_argument(
        "--reuse-seed",
        action="store_true",
        default=os.environ.get("CONVEYOR_BENCH_REUSE_SEED") == "1",
        help="keep each size's seeded database and reuse it next time (see history.py --reuse-seed)",
    )
    parser.add_argument(
        "--under-load",
        default=os.environ.get("CONVEYOR_BENCH_UNDER_LOAD") or None,
        metavar="NOTE",
        help="record that another load ran meanwhile (env CONVEYOR_BENCH_UNDER_LOAD)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000, 3000, 10000 jobs, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.chain_pages = "1000,3000,10000", 3, 5
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.max_jobs is not None:
        sizes = [s for s in sizes if s <= args.max_jobs] or [args.max_jobs]

    per_size: dict[str, Any] = {}
    full_largest: dict[str, Any] = {}
    for jobs in sizes:
        log(f"history at {jobs} jobs")
        figures = one_size(jobs, args, plans=jobs == sizes[-1])
        per_size[str(jobs)] = condensed(figures)
        if jobs == sizes[-1]:
            full_largest = figures
    smallest, largest = per_size[str(sizes[0])], per_size[str(sizes[-1])]
    key = "http_first_page_p50_ms_median_over_filters"
    growth = largest["summary"][key] / max(smallest["summary"][key], 0.01)
    emit(
        {
            "benchmark": "history_scale",
            "machine": machine_info(),
            "params": {
                "sizes": sizes,
                "repeat": args.repeat,
                "chain_pages": args.chain_pages,
                "database": ("sqlite (embedded)" if args.sqlite else "postgresql")
                + (
                    " (seeded databases kept and reused)"
                    if args.reuse_seed
                    else " (temporary database per size)"
                ),
                "under_load": args.under_load,
                "limit": 50,
            },
            "sizes": per_size,
            "largest_size_plans": {
                label: {
                    "first_page": v.get("plans"),
                    "deep_keyset_page": v.get("deep_keyset_page_ms", {}).get("plans"),
                }
                for label, v in full_largest.get("store_first_page", {}).items()
            },
            "median_first_page_p50_growth_smallest_to_largest": round(growth, 2),
            "flat_factor": FLAT_FACTOR,
            "flat": growth <= FLAT_FACTOR,
            "target_p99_ms": TARGET_P99_MS,
            "store_worst_p99_ms_at_largest": largest["store_worst_p99_ms"],
            "worst_p99_ms_any_shape_per_size": {
                size: {"p99_ms": v["worst_p99_ms_any_shape"], "where": v["worst"]}
                for size, v in per_size.items()
            },
            "http_worst_p99_ms_at_largest": largest["http_worst_p99_ms"],
            "meets_target_store": largest["store_worst_p99_ms"] < TARGET_P99_MS,
            "meets_target_http": largest["http_worst_p99_ms"] < TARGET_P99_MS,
            "notes": [
                "Fresh database per size; one keep-alive HTTP client; server with no workers.",
                "Baseline: the same deep position fetched by offset instead of the keyset cursor.",
                "Shared 2-core machine: noisy, compare within one run.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
