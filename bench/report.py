"""Render a ``run_all.py`` report (JSON) as Markdown with one PNG plot per benchmark.

Every section states the machine (cores, CPU, load average), the run date, the target, the
baseline measured in the same run and whether the target is met — including the ones that are
not. A benchmark that was not run or failed still gets its section, saying so.

    .venv/bin/python bench/report.py bench/results/<stamp>.json [--out docs]

writes docs/benchmarks.md and docs/benchmarks/*.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKDOWN_NAME = "benchmarks.md"
IMAGE_DIR = "benchmarks"


@dataclass
class Section:
    """What one benchmark contributes: the verdict lines, a table and a plot."""

    figure: str  # the headline figure, one line
    target: str  # the target in words ("none set" when there is none)
    baseline: str  # the baseline measured in the same run, in words
    met: bool | None  # None: no target
    table: list[list[str]] = field(default_factory=list)  # first row is the header
    plot: Callable[[Any], None] | None = None  # draws on a matplotlib Figure
    notes: list[str] = field(default_factory=list)
    short_target: str = ""  # for the summary table; default: the target up to its first " ("


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "no target set"}[met]


# --------------------------------------------------------------------------- sections
def model_section(r: dict[str, Any]) -> Section:
    unit = r.get("unit", "images")
    plain, best = r["plain_loop"], r["conveyor"]["best"]
    ratio = r["ratio_end_to_end"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        labels = ["plain loop\n(baseline)", "Conveyor\nend to end", "Conveyor\nserver side"]
        values = [
            plain["items_per_second"],
            best["end_to_end_items_per_second"],
            best["server_items_per_second"],
        ]
        ax.bar(labels, values, color=["#888888", "#1f77b4", "#aec7e8"])
        ax.axhline(
            plain["items_per_second"] * r["target_ratio"], color="red", ls="--", label="target 0.95 x plain"
        )
        ax.set_ylabel(f"{unit}/s")
        ax.legend(loc="lower right", fontsize=8)
        sweep = plain.get("batch_size_sweep_items_per_second") or {}
        ax2 = fig.add_subplot(1, 2, 2)
        if sweep:
            ax2.plot([int(k) for k in sweep], list(sweep.values()), marker="o")
            ax2.set_xscale("log", base=2)
            ax2.set_xlabel("batch size (plain loop)")
            ax2.set_ylabel(f"{unit}/s")
            ax2.set_title("plain-loop batch sweep", fontsize=9)
        else:
            ax2.text(0.5, 0.5, "no batch sweep in this run", ha="center", va="center")
            ax2.set_axis_off()

    return Section(
        figure=f"{fmt(best['end_to_end_items_per_second'])} {unit}/s end to end, ratio {fmt(ratio, 2)}",
        target=f"Conveyor end to end ≥ {r['target_ratio']} x the plain loop",
        baseline=f"plain in-process batched loop, same model, inputs and batch size: "
        f"{fmt(plain['items_per_second'])} {unit}/s (torch threads {plain['torch_threads']})",
        met=r["meets_target"],
        table=[
            ["", f"{unit}/s"],
            ["plain loop (best of all-cores / one thread)", fmt(plain["items_per_second"])],
            ["Conveyor end to end (best round)", fmt(best["end_to_end_items_per_second"])],
            ["Conveyor server side", fmt(best["server_items_per_second"])],
            ["ratio end to end / plain", fmt(ratio, 3)],
        ],
        plot=plot,
        notes=[
            f"{r['params']['items']} {unit}, batch size {r['params']['batch_size']}, "
            f"{r['conveyor']['workers']} workers, chunks of {r['conveyor']['chunk_size']}, "
            f"{r['params']['repeat']} round(s); model load per worker "
            f"{r['conveyor']['model_load_ms_per_worker']} ms "
            "(warm-up job, not counted)."
        ],
    )


def noop_section(r: dict[str, Any]) -> Section:
    c, p = r["conveyor"], r["plain_loop"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        labels = ["plain loop\n(baseline)", "Conveyor\nend to end", "Conveyor\nserver side"]
        ax.bar(
            labels,
            [p["items_per_second"], c["end_to_end_items_per_second"], c["server_items_per_second"] or 0],
            color=["#888888", "#1f77b4", "#aec7e8"],
        )
        ax.axhline(
            r["target_end_to_end_items_per_second"], color="red", ls="--", label="target 20,000 items/s"
        )
        ax.set_ylabel("items/s (log)")
        ax.legend(fontsize=8)

    return Section(
        figure=f"{fmt(c['end_to_end_items_per_second'])} items/s end to end ({r['params']['items']:,} items)",
        target=f"≥ {r['target_end_to_end_items_per_second']:,} items/s end to end",
        baseline=f"the same pipeline code in a plain in-process loop: {fmt(p['items_per_second'])} items/s",
        met=r["meets_target"],
        table=[
            ["", "value"],
            ["submit (POST with every input)", f"{fmt(c['submit_seconds'], 2)} s"],
            ["processing (201 → terminal)", f"{fmt(c['processing_seconds'], 2)} s"],
            ["end to end", f"{fmt(c['end_to_end_items_per_second'])} items/s"],
            ["server side (started → finished)", f"{fmt(c['server_items_per_second'])} items/s"],
            ["plain loop", f"{fmt(p['items_per_second'])} items/s"],
        ],
        plot=plot,
    )


def celery_section(r: dict[str, Any]) -> Section:
    c, p = r["conveyor"], r["plain_celery"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            ["plain Celery,\none task per item\n(baseline)", "Conveyor\n(chunks)"],
            [p["items_per_second"], c["items_per_second"]],
            color=["#888888", "#1f77b4"],
        )
        ax.axhline(p["items_per_second"] * r["target_ratio"], color="red", ls="--", label="target 20 x plain")
        ax.set_ylabel("items/s")
        ax.legend(fontsize=8)

    return Section(
        figure=f"{fmt(c['items_per_second'])} items/s, "
        f"{fmt(r['ratio_conveyor_to_plain_celery'], 1)}x plain Celery",
        target=f"≥ {r['target_ratio']}x plain Celery one task per item",
        baseline=f"plain Celery, one task per item, same broker ({r['params']['broker']}) and "
        f"{r['params']['concurrency']} processes: {fmt(p['items_per_second'])} items/s",
        met=r["meets_target"],
        table=[
            ["", "items", "items/s"],
            [
                "Conveyor (PostgreSQL + Celery)",
                fmt(r["params"]["conveyor_items"]),
                fmt(c["items_per_second"]),
            ],
            ["plain Celery", fmt(r["params"]["plain_celery_tasks"]), fmt(p["items_per_second"])],
        ],
        plot=plot,
    )


def submit_section(r: dict[str, Any]) -> Section:
    n, poll = r["notified"], r.get("polling_baseline")
    ps = ("p50", "p95", "p99")

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        width = 0.38
        xs = range(len(ps))
        ax.bar(
            [x - width / 2 for x in xs], [n["queue_time_ms"].get(p, 0) for p in ps], width, label="notified"
        )
        if poll:
            ax.bar(
                [x + width / 2 for x in xs],
                [poll["queue_time_ms"].get(p, 0) for p in ps],
                width,
                label="1 s polling (baseline)",
                color="#888888",
            )
        ax.set_xticks(list(xs), ps)
        ax.set_ylabel("queue_time_ms (submit → first item started)")
        ax.legend(fontsize=8)

    met = None
    if poll and n["queue_time_ms"].get("p99") is not None and poll["queue_time_ms"].get("p50") is not None:
        met = n["queue_time_ms"]["p99"] < poll["queue_time_ms"]["p50"]
    rows = [["", "p50 ms", "p95 ms", "p99 ms"]]
    rows.append(["queue_time_ms, notified", *(fmt(n["queue_time_ms"].get(p)) for p in ps)])
    rows.append(
        ["client POST → STARTED, notified", *(fmt(n["client_post_to_started_ms"].get(p)) for p in ps)]
    )
    if poll:
        rows.append(["queue_time_ms, 1 s polling", *(fmt(poll["queue_time_ms"].get(p)) for p in ps)])
    return Section(
        figure=f"p50 {fmt(n['queue_time_ms'].get('p50'))} ms, p99 {fmt(n['queue_time_ms'].get('p99'))} ms "
        f"over {n['jobs']} jobs",
        target="workers woken by notification, not 1 s polling (no number set); read as met when the "
        "notified p99 is below the polling baseline's p50",
        baseline="the same server with wake-ups disabled (workers poll every 1 s): "
        + (
            f"p50 {fmt(poll['queue_time_ms'].get('p50'))} ms, p99 {fmt(poll['queue_time_ms'].get('p99'))} ms"
            if poll
            else "not run"
        ),
        met=met,
        table=rows,
        plot=plot,
    )


def sse_section(r: dict[str, Any]) -> Section:
    run, cancel = r["run_to_pending_event_ms"], r["cancel_to_canceling_event_ms"]
    ps = ("p50", "p95", "p99")

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        width = 0.38
        xs = range(len(ps))
        ax.bar([x - width / 2 for x in xs], [run.get(p, 0) for p in ps], width, label="run → PENDING event")
        ax.bar(
            [x + width / 2 for x in xs],
            [cancel.get(p, 0) for p in ps],
            width,
            label="cancel → CANCELING event",
        )
        ax.axhline(1000, color="red", ls="--", label="target 1 s")
        ax.axhline(r.get("hub_poll_seconds", 0.25) * 1000, color="#888888", ls=":", label="hub poll period")
        ax.set_xticks(list(xs), ps)
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)

    worst = max(run.get("p99", 0), cancel.get("p99", 0))
    return Section(
        figure=f"run → event p50 {fmt(run.get('p50'))} ms, p99 {fmt(run.get('p99'))} ms "
        f"with {r['streams_open']} streams open",
        target="an update reaches a connected client within 1 s (p99 of both kinds ≤ 1000 ms)",
        baseline="none measured; the design bound is one hub poll period "
        f"({r.get('hub_poll_seconds', 0.25)} s) "
        "plus delivery",
        met=worst <= 1000,
        table=[
            ["", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            ["run → PENDING", *(fmt(run.get(p)) for p in (*ps, "max"))],
            ["cancel → CANCELING", *(fmt(cancel.get(p)) for p in (*ps, "max"))],
        ],
        plot=plot,
    )


def history_scale_section(r: dict[str, Any]) -> Section:
    sizes = r["params"]["sizes"]
    per = [r["sizes"][str(s)] for s in sizes]
    median_key = "http_first_page_p50_ms_median_over_filters"

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        series = {
            "first page p50, median over filters (HTTP)": [p["summary"][median_key] for p in per],
            "first page worst p99 (HTTP)": [p["http_worst_p99_ms"] for p in per],
            "first page worst p99 (store, in-process)": [p["store_worst_p99_ms"] for p in per],
            "deep page by keyset cursor, p50": [(p["deep_keyset_ms"] or {}).get("p50") for p in per],
            "deep page by offset, p50 (baseline)": [(p["deep_offset_ms"] or {}).get("p50") for p in per],
        }
        for label, values in series.items():
            style = ":" if "offset" in label else "-"
            ax.plot(
                sizes,
                [v if v is not None else float("nan") for v in values],
                marker="o",
                ls=style,
                label=label,
            )
        ax.axhline(r["target_p99_ms"], color="red", ls="--", label=f"target p99 < {r['target_p99_ms']:g} ms")
        ax.set_xscale("log")
        ax.set_xlabel("jobs in the history")
        ax.set_ylabel("ms (log)")
        ax.legend(fontsize=7)

    rows = [
        [
            "jobs",
            "first page p50 (median)",
            "worst p99 HTTP",
            "worst p99 store",
            "deep keyset p50",
            "deep offset p50",
            "next-page p99 (worst)",
        ]
    ]
    for size, p in zip(sizes, per, strict=True):
        rows.append(
            [
                fmt(size),
                fmt(p["summary"][median_key]),
                f"{fmt(p['http_worst_p99_ms'])} ({p['summary']['http_first_page_worst_filter']})",
                fmt(p["store_worst_p99_ms"]),
                fmt((p["deep_keyset_ms"] or {}).get("p50")),
                fmt((p["deep_offset_ms"] or {}).get("p50")),
                fmt(p.get("keyset_next_pages_worst_p99_ms")),
            ]
        )
    largest = per[-1]
    next_ok = (largest.get("keyset_next_pages_worst_p99_ms") or 0) < r["target_p99_ms"]
    met = bool(r["meets_target_http"] and next_ok and r["flat"])
    kinds = [
        ("http_first_page", "first page (HTTP)"),
        ("http_deep_keyset_page", "deep keyset page (HTTP)"),
        ("store_first_page", "first page (store)"),
        ("store_deep_keyset_page", "deep keyset page (store)"),
        ("http_modzy_page_1", "Modzy page 1 (HTTP)"),
        ("http_modzy_page_20", "Modzy page 20 (HTTP)"),
    ]
    worst_rows: list[list[str]] = []
    if all("worst" in p for p in per):  # bench/history.py since issue 17: every shape's worst p99
        met = bool(r["flat"] and all((p["worst_p99_ms_any_shape"] or 0) < r["target_p99_ms"] for p in per))
        worst_rows = [["worst p99 ms (shape)", *(fmt(s) + " jobs" for s in sizes)]]
        for key, label in kinds:
            worst_rows.append(
                [label]
                + [
                    f"{fmt(p['worst'][key]['p99_ms'])} ({p['worst'][key]['case']})"
                    if p["worst"].get(key, {}).get("p99_ms") is not None
                    else "—"
                    for p in per
                ]
            )
    under_load = r["params"].get("under_load")
    return Section(
        figure=f"first page p50 (median over filters) {fmt(per[0]['summary'][median_key])} ms at "
        f"{fmt(sizes[0])} jobs → {fmt(largest['summary'][median_key])} ms at {fmt(sizes[-1])} "
        f"(x{fmt(r['median_first_page_p50_growth_smallest_to_largest'], 2)})",
        target=f"flat from the smallest to the largest size (median p50 grows ≤ {r['flat_factor']}x: "
        f"{fmt(r['flat'])}); p99 < {r['target_p99_ms']:g} ms for any filter and keyset page at the largest "
        f"size over HTTP (worst first page {fmt(r['http_worst_p99_ms_at_largest'])} ms, store level "
        f"{fmt(r['store_worst_p99_ms_at_largest'])} ms)",
        baseline="the same deep position fetched by `offset` instead of the keyset cursor (table)",
        met=met,
        short_target=f"flat, and p99 < {r['target_p99_ms']:g} ms at {fmt(sizes[-1])} jobs",
        table=rows,
        plot=plot,
        notes=[
            f"Database: {r['params']['database']}; {r['params']['repeat']} requests per filter, page size 50."
            + (f" Measured while another load ran: {under_load}." if under_load else ""),
            *(["", *table_md(worst_rows)] if worst_rows else []),
        ],
    )


def history_section(r: dict[str, Any]) -> Section:
    pages = r["http_first_page_ms"]
    deep = r["http_deep_position"]["no filter"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        labels = list(pages)
        ys = range(len(labels))
        ax.barh([y + 0.2 for y in ys], [pages[k]["p50"] for k in labels], 0.4, label="p50")
        ax.barh([y - 0.2 for y in ys], [pages[k]["p99"] for k in labels], 0.4, label="p99")
        ax.axvline(50, color="red", ls="--", label="50 ms")
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms, first page over HTTP")
        ax.legend(fontsize=8)

    worst = r["summary"]["http_first_page_worst_p99_ms"]
    every = r["summary"].get("worst")  # bench/history.py since issue 17: every shape's worst p99
    notes = []
    if every:
        worst = r["summary"]["worst_p99_ms_any_shape"]
        notes = [
            "Worst p99 per shape: "
            + "; ".join(
                f"{k.replace('_', ' ')} {fmt(v['p99_ms'])} ms ({v['case']})" for k, v in every.items()
            ),
        ]
    if r["params"].get("under_load"):
        notes.append(f"Measured while another load ran: {r['params']['under_load']}.")
    load = r.get("load")
    if load and "kinds" in load:
        notes.append(
            f"The load over the {fmt(load['seconds'])} s: "
            + "; ".join(
                f"{kind.replace('_', ' ')} {fmt(k['requests_per_second'])} req/s, p50/p99 "
                f"{fmt(k['latency_ms'].get('p50'))}/{fmt(k['latency_ms'].get('p99'))} ms"
                for kind, k in load["kinds"].items()
            )
            + f"; {load['errors']} errors."
        )
    elif load:
        notes.append(f"The background load: {load.get('error', 'no figures')}.")
    return Section(
        figure="first page p50 "
        f"{fmt(r['summary']['http_first_page_p50_ms_median_over_filters'])} ms (median over "
        f"filters), worst p99 {fmt(worst)} ms at {r['params']['jobs']:,} jobs ({r['params']['database']})",
        target="p99 < 50 ms for every filter, ordering and page (first, deep keyset, Modzy) at this size",
        baseline=f"deep position {fmt(deep.get('position'))} by `offset`: p50 "
        f"{fmt((deep.get('offset_ms') or {}).get('p50'))} ms vs keyset cursor "
        f"{fmt((deep.get('keyset_cursor_ms') or {}).get('p50'))} ms",
        met=worst < 50,
        table=[["filter", "rows matching", "p50 ms", "p99 ms"]]
        + [[k, fmt(v["count"]), fmt(v["p50"]), fmt(v["p99"])] for k, v in pages.items()],
        plot=plot,
        notes=notes,
    )


def api_reads_section(r: dict[str, Any]) -> Section:
    names = [
        ("livez_baseline", "GET /livez (baseline)"),
        ("v2_job", "GET /api/v2/jobs/{id}/"),
        ("modzy_job", "GET /api/jobs/{identifier}"),
    ]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        ax.bar(
            [label.replace(" ", "\n", 1) for _, label in names],
            [r[n]["requests_per_second"] for n, _ in names],
            color=["#888888", "#1f77b4", "#ff7f0e"],
        )
        ax.set_ylabel("requests/s")
        ax.tick_params(axis="x", labelsize=7)
        ax2 = fig.add_subplot(1, 2, 2)
        width = 0.38
        xs = range(len(names))
        ax2.bar(
            [x - width / 2 for x in xs],
            [r[n]["latency_ms"].get("p50", 0) for n, _ in names],
            width,
            label="p50",
        )
        ax2.bar(
            [x + width / 2 for x in xs],
            [r[n]["latency_ms"].get("p99", 0) for n, _ in names],
            width,
            label="p99",
        )
        ax2.set_xticks(list(xs), ["livez", "v2", "modzy"])
        ax2.set_ylabel("ms")
        ax2.legend(fontsize=8)

    v2, mz = r["v2_job"], r["modzy_job"]
    shares = r.get("share_of_baseline") or {}
    share = r.get("target_share")
    return Section(
        figure=f"{fmt(v2['requests_per_second'])} req/s native ({fmt(shares.get('v2_job'), 2)}x livez), "
        f"{fmt(mz['requests_per_second'])} req/s Modzy ({fmt(shares.get('modzy_job'), 2)}x) "
        f"({r['params']['concurrency']} concurrent clients, {r['errors']} errors)",
        target=f"each status read ≥ {share} x `/livez` requests/s (same server, client and run)"
        if share is not None
        else "none set",
        short_target=f"≥ {share} x /livez req/s, both dialects" if share is not None else "",
        baseline=f"`GET /livez` (no auth, no database) on the same server and client: "
        f"{fmt(r['livez_baseline']['requests_per_second'])} req/s",
        met=r.get("met") if share is not None else None,
        table=[["endpoint", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors"]]
        + [
            [
                label,
                fmt(r[n]["requests_per_second"]),
                fmt(r[n]["latency_ms"].get("p50")),
                fmt(r[n]["latency_ms"].get("p90")),
                fmt(r[n]["latency_ms"].get("p99")),
                fmt(r[n]["errors"]),
            ]
            for n, label in names
        ],
        plot=plot,
        notes=[
            f"{r['params']['jobs']} finished jobs of {r['params']['items_per_job']} items, "
            f"{r['params']['seconds_per_endpoint']:g} s per endpoint, {r['params']['database']}; the client "
            "shares the machine's cores with the server."
        ]
        + (
            [
                "Server CPU per request: "
                + ", ".join(
                    f"{label} {fmt(r[n].get('server_cpu_ms_per_request'), 2)} ms" for n, label in names
                )
                + "; the share of /livez in server CPU time (less disturbed by other load): "
                + f"native {fmt(r['cpu_share_of_baseline'].get('v2_job'), 2)}x, "
                + f"Modzy {fmt(r['cpu_share_of_baseline'].get('modzy_job'), 2)}x."
            ]
            if r.get("cpu_share_of_baseline")
            else []
        ),
    )


def soak_section(r: dict[str, Any]) -> Section:
    rss = r["rss"]
    timeline = rss["timeline"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        ts = [s["t"] / 60 for s in timeline]
        ax.plot(ts, [s["total_mb"] for s in timeline], label="total", lw=2)
        ax.plot(ts, [s["server_mb"] for s in timeline], label="server")
        pids = sorted({pid for s in timeline for pid in s["workers_mb"]})
        roles = {pid: role for s in timeline for pid, role in s.get("roles", {}).items()}
        for pid in pids:
            ax.plot(
                ts,
                [s["workers_mb"].get(pid, float("nan")) for s in timeline],
                label=f"{roles.get(pid, 'pid')} {pid}",
                lw=0.8,
            )
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS MB")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
        ax2 = fig.add_subplot(1, 2, 2)
        kinds = [k for k, v in r["latency_ms"].items() if v.get("n")]
        ax2.bar(kinds, [r["latency_ms"][k]["p99"] for k in kinds], color="#1f77b4")
        ax2.set_ylabel("p99 ms")
        ax2.tick_params(axis="x", labelsize=7, rotation=20)

    all_done = set(r["jobs_by_final_status"]) <= {"SUCCESS"}
    met = bool(r["flat"] and r["errors_total"] == 0 and all_done)
    return Section(
        figure=f"{fmt(r['duration_seconds'] / 60, 1)} min: total RSS {fmt(rss['start']['total_mb'])} → "
        f"{fmt(rss['end']['total_mb'])} MB, {r['errors_total']} errors, {r['jobs_submitted']} jobs "
        f"{r['jobs_by_final_status']}",
        target=f"memory flat (total RSS grows ≤ {r['flat_second_half_limit']:.0%} over the second half: "
        f"{fmt(rss['total_growth_second_half'] * 100, 1)} %), zero errors, every submitted job SUCCESS",
        baseline=f"RSS at the start of the load: server {fmt(rss['start']['server_mb'])} MB, total "
        f"{fmt(rss['start']['total_mb'])} MB",
        met=met,
        table=[["request kind", "n", "p50 ms", "p99 ms", "max ms", "errors"]]
        + [
            [k, fmt(v.get("n")), fmt(v.get("p50")), fmt(v.get("p99")), fmt(v.get("max")), fmt(r["errors"][k])]
            for k, v in r["latency_ms"].items()
        ],
        plot=plot,
        notes=[
            f"RSS growth over the whole run: total {fmt(rss['total_growth_whole_run'] * 100, 1)} %, server "
            f"{fmt(rss['server_growth_whole_run'] * 100, 1)} %.",
            f"Load: a job of {r['params']['job_items']} items every "
            f"{r['params']['submit_every_seconds']:g} s, "
            f"{r['params']['pollers']} pollers, {r['params']['history_clients']} history reader(s), "
            f"{r['params']['sse_streams']} open event streams plus one reconnecting; "
            f"{r['params']['database']}.",
        ]
        + [f"Error sample: {e}" for e in r.get("error_samples", [])[:3]],
    )


# --------------------------------------------------------------------------- jobs by reference (issue 15)
def _fetch_note(r: dict[str, Any], what: str) -> list[str]:
    if r.get("workers_fetched"):
        return []
    return [
        f"**Workers did not fetch the inputs in this run** ({what}): the Conveyor figures measure the "
        "machinery over empty inputs, not fetching; no ratio is judged."
    ]


def manifest_scale_section(r: dict[str, Any]) -> Section:
    rss, db, met = r["rss"], r["database"], r["met"]

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        timeline = rss["timeline"]
        ax.plot([s["t"] for s in timeline], [s["server_mb"] for s in timeline], label="server")
        ax.plot([s["t"] for s in timeline], [s["total_mb"] for s in timeline], label="server + workers")
        ax.axhline(
            rss["before_post"]["server_mb"] + r["targets"]["server_rss_growth_mb"],
            color="red",
            ls="--",
            label="server target",
        )
        ax.set_xlabel("s after the POST")
        ax.set_ylabel("RSS MB")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        ax2 = fig.add_subplot(1, 2, 2)
        progress = r["progress_timeline"]
        ax2.plot([p["t"] for p in progress], [p["total"] for p in progress], label="total (listed)")
        ax2.plot([p["t"] for p in progress], [p["completed"] for p in progress], label="completed")
        ax2.set_xlabel("s after the POST")
        ax2.set_ylabel("items")
        ax2.legend(fontsize=7)

    n = r["params"]["entries"]
    return Section(
        figure=f"{n:,} entries: 201 in {fmt(r['submit_seconds'], 2)} s, "
        f"server RSS +{fmt(rss['server_growth_mb'])} MB, "
        f"{fmt(db['growth_bytes_per_item'])} DB bytes/item, job {r['job']['status']} in "
        f"{fmt(r['job_end_to_end_seconds'])} s",
        target=f"201 < 2 s ({mark(met['submit_under_2_s'])}), server RSS growth < 200 MB "
        f"({mark(met['server_rss_growth_under_200_mb'])}), < 1 KB/item in the database "
        f"({mark(met['db_bytes_per_item_under_1_kb'])}), job SUCCESS ({mark(met['job_succeeded'])})",
        short_target="201 < 2 s, server RSS < +200 MB, < 1 KB/item",
        baseline=f"the server before the POST: RSS {fmt(rss['before_post']['server_mb'])} MB (server), "
        f"{fmt(rss['before_post']['total_mb'])} MB (with workers); database {fmt(db['bytes_before'])} bytes",
        met=r["meets_target"],
        table=[
            ["", "value"],
            ["time to 201", f"{fmt(r['submit_seconds'], 3)} s"],
            ["collect stage seen done", f"{fmt(r['collect_seen_done_seconds'])} s after the POST"],
            [
                "job terminal",
                f"{fmt(r['job_end_to_end_seconds'])} s after the POST "
                f"({fmt(r['end_to_end_items_per_second'])} items/s)",
            ],
            ["server RSS growth (peak - before)", f"{fmt(rss['server_growth_mb'])} MB"],
            ["server + workers RSS growth", f"{fmt(rss['tree_growth_mb'])} MB"],
            ["database growth / item", f"{fmt(db['growth_bytes_per_item'])} bytes"],
            ["items table (with indexes) / item", f"{fmt(db['items_table_bytes_per_item'])} bytes"],
            ["objects fetched by workers", fmt(r["objects_fetched"])],
        ],
        plot=plot,
        notes=[
            f"{db['backend']}; {r['params']['workers']} workers; manifest {fmt(r['manifest_bytes'])} bytes; "
            f"items {r['job']['completed']:,} completed, {r['job']['failed']:,} failed.",
            *_fetch_note(r, f"{r['objects_fetched']:,} objects served for {r['job']['total']:,} items"),
        ],
    )


def fetch_throughput_section(r: dict[str, Any]) -> Section:
    best, plain = r["conveyor"]["best"], r["plain_loop"]
    streams = r.get("streams_loop")  # reports before the bare-streams baseline have none
    bars = [("httpx.AsyncClient loop\n(baseline)", plain["items_per_second"], "#888888")]
    if streams:
        bars.append(("asyncio streams loop\n(baseline)", streams["items_per_second"], "#555555"))
    strongest = max(value for _, value, _ in bars)

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            [label for label, _, _ in bars] + ["Conveyor\nend to end", "Conveyor\nserver side"],
            [value for _, value, _ in bars]
            + [best["end_to_end_items_per_second"], best["server_items_per_second"] or 0],
            color=[color for _, _, color in bars] + ["#1f77b4", "#aec7e8"],
        )
        ax.axhline(strongest * r["target_ratio"], color="red", ls="--", label="target 0.8 x the faster loop")
        ax.set_ylabel("items/s")
        ax.legend(fontsize=8)

    concurrency = r["params"]["concurrency"]
    baseline = f"one httpx.AsyncClient with {concurrency} tasks, same server and URLs: "
    baseline += f"{fmt(plain['items_per_second'])} items/s"
    table = [["", "items/s"], ["plain asyncio loop (httpx.AsyncClient)", fmt(plain["items_per_second"])]]
    if streams:
        baseline += (
            f"; the same loop on bare asyncio streams ({concurrency} keep-alive connections): "
            f"{fmt(streams['items_per_second'])} items/s"
        )
        table.append(["plain asyncio loop (bare streams)", fmt(streams["items_per_second"])])
    table += [
        ["Conveyor end to end (best round)", fmt(best["end_to_end_items_per_second"])],
        ["Conveyor server side", fmt(best["server_items_per_second"])],
    ]
    figure = f"{fmt(best['end_to_end_items_per_second'])} items/s end to end, "
    figure += f"ratio {fmt(r['ratio_end_to_end'], 2)}"
    if streams and r.get("ratio_end_to_end_vs_httpx") is not None:
        figure += f" (vs the httpx loop alone: {fmt(r['ratio_end_to_end_vs_httpx'], 2)})"
    return Section(
        figure=figure,
        target=f"Conveyor end to end ≥ {r['target_ratio']} x a plain asyncio fetch loop"
        + (" (the faster of the two)" if streams else ""),
        baseline=baseline,
        met=r["meets_target"],
        table=table,
        plot=plot,
        notes=[
            f"{r['params']['items']:,} objects of {r['params']['object_bytes']} bytes, "
            f"{r['params']['workers']} workers x {r['params']['fetch_concurrency_per_worker']} fetches; "
            "objects fetched by Conveyor in "
            f"its best round: {best['objects_fetched']:,}.",
            *_fetch_note(r, "objects_fetched < items"),
        ],
    )


def http_workers_section(r: dict[str, Any]) -> Section:
    local, http = r["local"], r["http"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            ["2 local workers\n(baseline)", "2 HTTP workers\nserver side", "2 HTTP workers\nend to end"],
            [
                local["server_items_per_second"] or 0,
                http["server_items_per_second"] or 0,
                http["end_to_end_items_per_second"],
            ],
            color=["#888888", "#1f77b4", "#aec7e8"],
        )
        ax.axhline(
            (local["server_items_per_second"] or 0) * r["target_ratio"],
            color="red",
            ls="--",
            label=f"target {r['target_ratio']} x local",
        )
        ax.set_ylabel("items/s")
        ax.legend(fontsize=8)

    return Section(
        figure=f"{fmt(http['server_items_per_second'])} items/s through 2 HTTP workers, "
        f"{fmt(r['ratio_http_to_local_server_side'], 2)} x local ({r['params']['items']:,} items)",
        target=f"≥ {r['target_ratio']} x 2 local workers (server side)",
        baseline=f"2 local workers on the same job: {fmt(local['server_items_per_second'])} items/s",
        met=r["meets_target"],
        table=[
            ["", "local workers", "HTTP workers"],
            [
                "server side (started → finished)",
                fmt(local["server_items_per_second"]),
                fmt(http["server_items_per_second"]),
            ],
            [
                "end to end",
                fmt(local["end_to_end_items_per_second"]),
                fmt(http["end_to_end_items_per_second"]),
            ],
            [
                "processing (201 → terminal)",
                f"{fmt(local['processing_seconds'], 2)} s",
                f"{fmt(http['processing_seconds'], 2)} s",
            ],
        ],
        plot=plot,
        notes=list(r.get("notes", [])),
    )


def model_by_reference_section(r: dict[str, Any]) -> Section:
    plain, best = r["plain_loop"], r["conveyor"]["best"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            ["plain loop over files\n(baseline)", "Conveyor by reference\nend to end", "server side"],
            [plain["items_per_second"], best["end_to_end_items_per_second"], best["server_items_per_second"]],
            color=["#888888", "#1f77b4", "#aec7e8"],
        )
        ax.axhline(
            plain["items_per_second"] * r["target_ratio"], color="red", ls="--", label="target 0.95 x plain"
        )
        ax.set_ylabel("images/s")
        ax.legend(fontsize=8)

    return Section(
        figure=f"{fmt(best['end_to_end_items_per_second'])} images/s end to end, "
        f"ratio {fmt(r['ratio_end_to_end'], 2)}",
        target=f"Conveyor by reference end to end ≥ {r['target_ratio']} x the plain loop reading the files",
        baseline=f"plain in-process loop over the same files, same model and batch size: "
        f"{fmt(plain['items_per_second'])} images/s (torch threads {plain['torch_threads']})",
        met=r["meets_target"],
        table=[
            ["", "images/s"],
            ["plain loop (best of all-cores / one thread)", fmt(plain["items_per_second"])],
            ["Conveyor end to end (best round)", fmt(best["end_to_end_items_per_second"])],
            ["Conveyor server side", fmt(best["server_items_per_second"])],
        ],
        plot=plot,
        notes=[
            f"{r['params']['items']} images, batch size {r['params']['batch_size']}, "
            f"{r['conveyor']['workers']} workers, chunks of {r['conveyor']['chunk_size']}; "
            f"best round: {best['status']}, "
            f"{best['objects_fetched']} images fetched.",
            *_fetch_note(r, "images not fetched or the job did not succeed"),
        ],
    )


def submit_by_reference_section(r: dict[str, Any]) -> Section:
    ref, old = r["by_reference"], r["at_submit"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            ["fetch: at_submit\n(old path)", "by reference\n(default)"],
            [old["best_post_seconds"], ref["best_post_seconds"]],
            color=["#888888", "#1f77b4"],
        )
        ax.set_ylabel("POST → 201, s (log)")

    n = r["params"]["urls"]
    return Section(
        figure=f"{n:,} URLs: POST {fmt(ref['best_post_seconds'], 2)} s by reference vs "
        f"{fmt(old['best_post_seconds'], 1)} s at submit",
        target="submit answers at once (no number set)",
        baseline=f"the old path on the same URLs (`fetch: at_submit`): {fmt(old['best_post_seconds'], 2)} s",
        met=None,
        table=[
            ["", "POST s (best)", "objects fetched during the POST"],
            [
                "by reference",
                fmt(ref["best_post_seconds"], 3),
                fmt(ref["runs"][0]["objects_fetched_during_post"]),
            ],
            [
                "at submit",
                fmt(old["best_post_seconds"], 3),
                fmt(old["runs"][0]["objects_fetched_during_post"]),
            ],
        ],
        plot=plot,
        notes=[f"Objects: {r['params']['objects']} ({fmt(r['params']['object_bytes_total'])} bytes in all)."],
    )


def conditional_gets_section(r: dict[str, Any]) -> Section:
    reads = [name for name in ("detail", "items", "history", "modzy_job") if name in r]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        width = 0.38
        xs = range(len(reads))
        ax.bar(
            [x - width / 2 for x in xs],
            [r[n]["200"]["requests_per_second"] for n in reads],
            width,
            label="200 (baseline)",
            color="#888888",
        )
        ax.bar(
            [x + width / 2 for x in xs],
            [r[n]["304"]["requests_per_second"] for n in reads],
            width,
            label="304",
            color="#1f77b4",
        )
        ax.set_xticks(list(xs), reads)
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=8)
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.bar(
            [x - width / 2 for x in xs],
            [r[n]["200"]["latency_ms"].get("p50", 0) for n in reads],
            width,
            label="200 p50",
            color="#888888",
        )
        ax2.bar(
            [x + width / 2 for x in xs],
            [r[n]["304"]["latency_ms"].get("p50", 0) for n in reads],
            width,
            label="304 p50",
            color="#1f77b4",
        )
        ax2.set_xticks(list(xs), reads)
        ax2.set_ylabel("ms")
        ax2.legend(fontsize=8)

    return Section(
        figure=", ".join(f"{n} {fmt(r[n]['speedup'], 2)}x" for n in reads)
        + " requests/s of a 304 over a 200",
        target="a 304 costs less than a 200 (higher requests/s) on every read",
        baseline="the same reads answered 200 (no `If-None-Match`), same client and server, back to back",
        met=r.get("met"),
        table=[["read", "path", "200 req/s", "304 req/s", "speedup", "200 p50 ms", "304 p50 ms", "200 bytes"]]
        + [
            [
                n,
                f"`{r[n]['path']}`",
                fmt(r[n]["200"]["requests_per_second"]),
                fmt(r[n]["304"]["requests_per_second"]),
                fmt(r[n]["speedup"], 2),
                fmt(r[n]["200"]["latency_ms"].get("p50"), 2),
                fmt(r[n]["304"]["latency_ms"].get("p50"), 2),
                fmt(r[n]["200"]["body_bytes"]),
            ]
            for n in reads
        ],
        plot=plot,
        notes=[
            f"One keep-alive client, {fmt(r['params']['requests_per_phase'])} requests per phase over "
            f"{fmt(r['params']['jobs'])} finished jobs (history pages of {r['params']['page']}); "
            f"{r['params']['database']}."
        ],
    )


def device_throughput_section(r: dict[str, Any]) -> Section:
    devices = r["devices"]
    rows = [
        [
            "device",
            "workload",
            "batch / forward",
            "plain loop",
            "overlap off",
            "overlap on",
            "on / off (rounds)",
        ]
    ]
    for device, models in devices.items():
        imagenet = models["imagenet-classifier"]
        for workload in ("photos", "large"):
            figures = imagenet[workload]
            rows.append(
                [
                    device,
                    f"imagenet-classifier, {workload} ({figures['images']} images)",
                    f"{imagenet['batch_size']} / {imagenet['forward_batch']}",
                    fmt(figures["plain_loop"]["items_per_second"]),
                    fmt(figures["overlap_off"]["items_per_second"]),
                    fmt(figures["overlap_on"]["items_per_second"]),
                    f"{fmt(figures['overlap_speedup'], 2)} "
                    f"({', '.join(fmt(x, 2) for x in figures.get('overlap_speedup_by_round', []))})",
                ]
            )
        text = models["text-embedding"]
        rows.append(
            [
                device,
                f"text-embedding ({text['texts']} texts)",
                str(text["batch_size"]),
                fmt(text["plain_loop"]["items_per_second"]),
                fmt(text["pipeline"]["items_per_second"]),
                "",
                "",
            ]
        )
    first = next(iter(devices))
    photos = devices[first]["imagenet-classifier"]["photos"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        labels, values, colors = [], [], []
        for device, models in devices.items():
            for workload in ("photos", "large"):
                figures = models["imagenet-classifier"][workload]
                for variant, color in (
                    ("plain_loop", "#888888"),
                    ("overlap_off", "#aec7e8"),
                    ("overlap_on", "#1f77b4"),
                ):
                    labels.append(f"{device} {workload}\n{variant.replace('_', ' ')}")
                    values.append(figures[variant]["items_per_second"])
                    colors.append(color)
        ax.bar(labels, values, color=colors)
        ax.set_ylabel("images/s")
        ax.tick_params(axis="x", labelsize=6)

    return Section(
        figure=f"imagenet-classifier on {first}: {fmt(photos['overlap_on']['items_per_second'])} images/s "
        f"with decode-ahead, {fmt(photos['overlap_off']['items_per_second'])} without "
        f"(median of the rounds' ratios x{fmt(photos['overlap_speedup'], 2)}); devices: {', '.join(devices)}",
        target="none set (a figure per device, to run on a GPU machine)",
        baseline="plain in-process loop (decode → preprocess → forward → top-5 at the pipeline's forward "
        f"size): {fmt(photos['plain_loop']['items_per_second'])} images/s on {first}",
        met=None,
        table=rows,
        plot=plot,
        notes=[
            f"torch {r['params']['torch']}, {r['params']['torch_threads']} CPU thread(s), CUDA available: "
            f"{fmt(r['params']['cuda_available'])}; large = the photos enlarged to "
            f"{r['params']['large_px']} px (JPEG); variants take turns batch by batch; images/s: the best "
            f"of {r['params']['repeat']} round(s); on / off: the median of the rounds' ratios.",
        ],
    )


def antenna_pull_section(r: dict[str, Any]) -> Section:
    pull, local = r["pull"], r["local_workers_baseline"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(
            ["local workers\nno-op (baseline)", f"{r['params']['pullers']} ADC pullers\n(async_api)"],
            [local["items_per_second_after_submit"], pull["results_per_second"]],
            color=["#888888", "#1f77b4"],
        )
        ax.axhline(r["target_results_per_second"], color="red", ls="--", label="target 1,000 results/s")
        ax.set_ylabel("items (results) per second")
        ax.legend(fontsize=8)

    return Section(
        figure=f"{fmt(pull['results_per_second'])} results/s with {r['params']['pullers']} pullers "
        f"({r['params']['items']:,} items, {r['params']['database']})",
        target=f"≥ {r['target_results_per_second']:,} results/s on 2 cores "
        f"(Antenna: {r['antenna_reported']})",
        baseline=f"the same items through 2 local workers' no-op pipeline: "
        f"{fmt(local['items_per_second_after_submit'])} items/s",
        met=r["meets_target"],
        table=[
            ["", "value"],
            ["pull: first reservation → terminal", f"{fmt(pull['seconds'], 2)} s"],
            [
                "POST /tasks/ (batch 24) p50 / p99",
                f"{fmt(pull['tasks_ms']['p50'])} / {fmt(pull['tasks_ms']['p99'])} ms",
            ],
            [
                "POST /result/ (24 results) p50 / p99",
                f"{fmt(pull['result_ms']['p50'])} / {fmt(pull['result_ms']['p99'])} ms",
            ],
            ["local workers: 201 → terminal", f"{fmt(local['processing_seconds'], 2)} s"],
            ["results per server CPU-second", fmt(pull.get("results_per_server_cpu_second"))],
        ],
        plot=plot,
        notes=[
            "Pullers are threads speaking the ADC worker's wire (batch_size 24, one no-op "
            "PipelineResultsResponse per task, "
            f"{r['params'].get('post_ahead', 0)} result posts in flight per puller, "
            "like the ADC's ResultPoster"
            + (", every image_url downloaded" if r["params"]["download"] else "")
            + "); they share the 2 cores with the server."
        ],
    )


LOAD_KINDS = (
    ("status_native", "status, native (ETag)"),
    ("status_modzy", "status, Modzy"),
    ("history", "history page"),
    ("sse", "SSE connect"),
)


def load_section(r: dict[str, Any]) -> Section:
    kinds = [(k, label) for k, label in LOAD_KINDS if k in r["kinds"]]
    idle, loaded = r["probe_idle"], r["probe_under_load"]

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 2, 1)
        width = 0.38
        xs = range(len(kinds))
        for offset, p in ((-width / 2, "p50"), (width / 2, "p99")):
            ax.bar(
                [x + offset for x in xs],
                [r["kinds"][k]["latency_ms"].get(p, 0) for k, _ in kinds],
                width,
                label=p,
            )
        ax.set_xticks(list(xs), [label.replace(", ", "\n").replace(" ", "\n", 1) for _, label in kinds])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
        ax2 = fig.add_subplot(1, 2, 2)
        labels = ["submit", "submit → finished"]
        ys = range(len(labels))
        for offset, (name, probe) in ((-width / 2, ("idle", idle)), (width / 2, ("under load", loaded))):
            ax2.bar(
                [y + offset for y in ys],
                [probe["submit_ms"].get("p99", 0), probe["submit_to_finished_ms"].get("p99", 0)],
                width,
                label=f"p99 {name}",
            )
        ax2.axhline(500, color="#888888", linestyle="--", linewidth=1)
        ax2.set_xticks(list(ys), labels)
        ax2.set_ylabel("ms")
        ax2.legend(fontsize=8)

    params = r["params"]
    total_rps = sum(r["kinds"][k]["requests_per_second"] for k, _ in kinds)
    return Section(
        figure=f"{params['pollers']} pollers, {fmt(total_rps)} req/s: status p50/p99 "
        f"{fmt(r['kinds']['status_native']['latency_ms'].get('p50'))}/"
        f"{fmt(r['kinds']['status_native']['latency_ms'].get('p99'))} ms native, "
        f"{fmt(r['kinds']['status_modzy']['latency_ms'].get('p50'))}/"
        f"{fmt(r['kinds']['status_modzy']['latency_ms'].get('p99'))} ms Modzy; submit p99 "
        f"{fmt(loaded['submit_ms'].get('p99'))} ms; {r['errors']} errors, {r['server_errors_5xx']} 5xx",
        target="0 errors, no 5xx, submit p99 < 500 ms under the load",
        short_target="0 errors, no 5xx, submit p99 < 500 ms",
        baseline=f"the same probe idle before the load: submit p99 {fmt(idle['submit_ms'].get('p99'))} ms, "
        f"submit → finished p50/p99 {fmt(idle['submit_to_finished_ms'].get('p50'))}/"
        f"{fmt(idle['submit_to_finished_ms'].get('p99'))} ms",
        met=r.get("met"),
        table=[["request", "clients", "requests/s", "p50 ms", "p90 ms", "p99 ms", "answers", "errors"]]
        + [
            [
                label,
                fmt(r["clients"].get(k)),
                fmt(r["kinds"][k]["requests_per_second"]),
                fmt(r["kinds"][k]["latency_ms"].get("p50")),
                fmt(r["kinds"][k]["latency_ms"].get("p90")),
                fmt(r["kinds"][k]["latency_ms"].get("p99")),
                ", ".join(f"{n} {s}" for s, n in sorted(r["kinds"][k]["statuses"].items())),
                fmt(sum(r["kinds"][k]["errors"].values())),
            ]
            for k, label in kinds
        ]
        + [
            [
                f"probe: {phase}",
                "1",
                "-",
                f"submit {fmt(probe['submit_ms'].get('p50'))}",
                f"submit {fmt(probe['submit_ms'].get('p90'))}",
                f"submit {fmt(probe['submit_ms'].get('p99'))}",
                f"{probe['jobs']} jobs, submit → finished p50/p99 "
                f"{fmt(probe['submit_to_finished_ms'].get('p50'))}/"
                f"{fmt(probe['submit_to_finished_ms'].get('p99'))} ms",
                fmt(sum(probe["errors"].values())),
            ]
            for phase, probe in (("idle", idle), ("under load", loaded))
        ],
        plot=plot,
        notes=[
            f"{params['database']}, {params['workers']} local workers; {params['jobs']} finished jobs "
            f"polled, {fmt(r['seconds'])} s of load; status pollers every "
            f"{params['status_poll_interval_s']:g} s, history every {params['history_poll_interval_s']:g} s, "
            f"SSE sessions ~{params['sse_session_s']:g} s.",
            f"Server RSS (server + workers): {fmt(r['rss']['before_load']['total_mb'])} MB before the load, "
            f"peak {fmt(r['rss']['peak']['total_mb'])} MB, {fmt(r['rss']['end']['total_mb'])} MB at the end "
            f"(server process alone {fmt(r['rss']['before_load']['server_mb'])} → "
            f"{fmt(r['rss']['end']['server_mb'])} MB). CPU during the load: the server process "
            f"{fmt(r.get('server_cores_used'), 2)} cores, with its workers "
            f"{fmt(r.get('server_tree_cores_used'), 2)}.",
            f"SSE: {r['counters'].get('sse_connections', 0)} connections, "
            f"{r['counters'].get('sse_events', 0)} events received. The generator's loop lag p50/p99 "
            f"{fmt(r.get('generator_loop_lag_ms', {}).get('p50'))}/"
            f"{fmt(r.get('generator_loop_lag_ms', {}).get('p99'))} ms (included in every client-side "
            "latency).",
        ],
    )


# name -> (title, section builder); the order of the report
SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], Section]]] = {
    "model_throughput": ("Model throughput: imagenet-classifier vs a plain loop", model_section),
    "embedding_throughput": ("Model throughput: text-embedding vs a plain loop", model_section),
    "noop_throughput": ("No-op items/s, embedded mode", noop_section),
    "celery_throughput": ("No-op items/s, distributed mode vs plain Celery", celery_section),
    "submit_latency": ("Submit → first item started", submit_section),
    "sse_latency": ("Live events: change → SSE event", sse_section),
    "history_scale": ("History latency from 10k to 1M jobs", history_scale_section),
    "history_scale_sqlite": ("History latency from 10k to 100k jobs, SQLite", history_scale_section),
    "history": ("History at one size", history_section),
    "history_postgresql": ("History at 1,000,000 jobs, PostgreSQL", history_section),
    "history_under_load": ("History under load (200 pollers): SQLite, 100,000 jobs", history_section),
    "history_under_load_postgresql": (
        "History under load (200 pollers): PostgreSQL, 1,000,000 jobs",
        history_section,
    ),
    "api_reads": ("API requests/s for job status reads", api_reads_section),
    "api_reads_postgresql": ("API requests/s for job status reads, PostgreSQL", api_reads_section),
    "conditional_gets": ("Conditional GETs: a 304 against a 200", conditional_gets_section),
    "load": ("Under load (200 pollers): embedded, SQLite", load_section),
    "load_postgresql": ("Under load (200 pollers): PostgreSQL", load_section),
    "soak": ("Soak: mixed load, memory and p99", soak_section),
    "manifest_scale": ("Jobs by reference: a 1,000,000-entry manifest", manifest_scale_section),
    "submit_by_reference": (
        "Jobs by reference: POST time, at submit vs by reference",
        submit_by_reference_section,
    ),
    "fetch_throughput": ("Jobs by reference: no-op items/s with worker fetches", fetch_throughput_section),
    "model_by_reference": (
        "Jobs by reference: imagenet-classifier over loopback HTTP",
        model_by_reference_section,
    ),
    "http_workers": ("HTTP workers: no-op items/s vs local workers", http_workers_section),
    "device_throughput": ("Model pipelines per device (CONVEYOR_DEVICE)", device_throughput_section),
    "antenna_pull": ("Antenna pull workers (async_api): results/s", antenna_pull_section),
}


# --------------------------------------------------------------------------- rendering
def machine_line(report: dict[str, Any]) -> str:
    m = report.get("machine", {})
    parts = [
        f"{m.get('nproc', '?')} cores" + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""),
        f"{m['mem_total_gb']} GB" if m.get("mem_total_gb") else None,
        f"run {report.get('started_at', m.get('date', '?'))}",
        f"load average at start {m.get('loadavg_1_5_15')}" if m.get("loadavg_1_5_15") else None,
        f"commit {m['git_commit']}" if m.get("git_commit") else None,
        f"{report.get('mode', '?')} run",
    ]
    return " · ".join(p for p in parts if p)


def draw(section: Section, title: str, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig = plt.figure(figsize=(10, 4.6))
    assert section.plot is not None
    section.plot(fig)
    m = report.get("machine", {})
    status = {True: "target MET", False: "target NOT MET", None: "no target set"}[section.met]
    fig.suptitle(
        f"{title} — {status}\n{m.get('nproc', '?')} cores · {str(report.get('started_at', ''))[:16]} · "
        f"{report.get('mode', '')} run",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table_md(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    out = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join("---" for _ in rows[0]) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return out


def render(report: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    """Write ``out_dir/benchmarks.md`` and ``out_dir/benchmarks/<name>.png``; the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = out_dir / IMAGE_DIR
    if plots:
        images.mkdir(exist_ok=True)
    results = report.get("results", {})
    summary = [["benchmark", "figure", "target", "met"]]
    body: list[str] = []
    for name, (title, build) in SECTIONS.items():
        body += ["", f"## {title}", ""]
        figures = results.get(name)
        if figures is None:
            body.append("*Not run in this report.*")
            summary.append([title, "not run", "", ""])
            continue
        if "error" in figures:
            body.append(
                f"*Failed in this run: {figures['error']}* (arguments: `{' '.join(figures.get('args', []))}`)"
            )
            summary.append([title, "failed", "", ""])
            continue
        try:
            section = build(figures)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            body.append(f"*Could not render this benchmark's figures ({type(exc).__name__}: {exc}).*")
            summary.append([title, "unreadable", "", ""])
            continue
        short = section.short_target or section.target.split(" (")[0]
        summary.append([title, section.figure, short, verdict(section.met)])
        body.append(f"*{machine_line(report)}*")
        body.append("")
        body.append(f"- **Figure:** {section.figure}")
        body.append(f"- **Target:** {section.target} — {verdict(section.met)}")
        body.append(f"- **Baseline (same run):** {section.baseline}")
        body.append(
            f"- **Command:** `bench/{figures.get('script', name + '.py')} "
            f"{' '.join(figures.get('args', []))}`"
            f" ({fmt(figures.get('seconds'))} s)"
        )
        if plots and section.plot is not None:
            draw(section, title, report, images / f"{name}.png")
            body += ["", f"![{title}]({IMAGE_DIR}/{name}.png)"]
        body += ["", *table_md(section.table)]
        if section.notes:
            body += [
                "",
                *[note if note.startswith("|") or not note else f"- {note}" for note in section.notes],
            ]
    head = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`, rendered by `bench/report.py`);",
        "do not edit by hand.",
        "Every figure is measured next to its baseline in the same run on the same machine; targets that",
        "are not met are shown as such.",
        "",
        f"*{machine_line(report)}; the whole run took {fmt(report.get('seconds'))} s.*",
        "",
        *table_md(summary),
    ]
    if report.get("mode") == "quick":
        head += [
            "",
            "**Quick run: small sizes for a smoke test; these figures say little about performance.**",
        ]
    path = out_dir / MARKDOWN_NAME
    path.write_text("\n".join(head + body) + "\n")
    return path


def splice(report: dict[str, Any], docs: Path, plots: bool = True) -> Path:
    """Render the benchmarks ``report`` ran (a ``run_all.py --only`` run) into the existing
    ``docs/benchmarks.md``: each of its sections and summary rows replaces the one of the same
    title (or is added in SECTIONS order), with its own run line; the other sections, measured by
    earlier runs, stay as they are. Its plots go to ``docs/benchmarks/``."""
    import tempfile

    ran = [name for name in SECTIONS if name in report.get("results", {})]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = render(report, Path(tmp), plots=plots)
        new_sections = _sections(fresh.read_text())
        new_rows = _summary_rows(fresh.read_text())
        if plots:
            (docs / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
            for name in ran:
                png = Path(tmp) / IMAGE_DIR / f"{name}.png"
                if png.exists():
                    shutil.copyfile(png, docs / IMAGE_DIR / f"{name}.png")
    path = docs / MARKDOWN_NAME
    text = path.read_text()
    head, sections = text.split("\n## ", 1)[0], _sections(text)
    rows = _summary_rows(text)
    for name in ran:
        title = SECTIONS[name][0]
        sections[title] = new_sections[title]
        rows[title] = new_rows[title]
    order = [title for title, _ in SECTIONS.values()]
    ordered = sorted(sections, key=lambda t: order.index(t) if t in order else len(order))
    table_start = head.index("| benchmark | figure |")
    table = head[table_start:].split("\n\n", 1)
    summary = "\n".join(
        ["| benchmark | figure | target | met |", "| --- | --- | --- | --- |"]
        + [rows[t] for t in sorted(rows, key=lambda t: order.index(t) if t in order else len(order))]
    )
    head = head[:table_start] + summary + ("\n\n" + table[1] if len(table) > 1 else "\n")
    path.write_text(head.rstrip("\n") + "\n" + "".join(f"\n## {t}\n{sections[t]}" for t in ordered))
    return path


def _sections(markdown: str) -> dict[str, str]:
    """``## Title`` sections of a rendered report: title -> body (up to the next one)."""
    out = {}
    for chunk in markdown.split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        out[title.strip()] = body.rstrip("\n") + "\n"
    return out


def _summary_rows(markdown: str) -> dict[str, str]:
    """The summary table's rows by their first cell (the section title)."""
    head = markdown.split("\n## ", 1)[0]
    rows = [line for line in head.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return {line.split(" | ", 1)[0][2:]: line for line in rows[1:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", type=Path, help="a JSON report written by run_all.py")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: next to the JSON)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--splice",
        type=Path,
        default=None,
        metavar="DOCS",
        help="put the sections this report ran into DOCS/benchmarks.md (e.g. docs), replacing those of "
        "the same title and keeping the others; for a run_all.py --only run",
    )
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    if args.splice:
        print(splice(report, args.splice, plots=not args.no_plots))
        return
    out = args.out or args.report.with_suffix("")
    print(render(report, out, plots=not args.no_plots))


if __name__ == "__main__":
    sys.exit(main())
