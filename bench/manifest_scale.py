"""A job over a 1,000,000-entry JSONL manifest at an address: time to 201, server memory, database
bytes per item, the collect stage and the whole job (issue 15's scale targets).

A local file server (``object_server.py``, 127.0.0.1) serves a generated ``list.jsonl`` of N
entries ``{"name": "item-<i>", "uri": "<same server>/o/<i mod K>.bin"}`` and the K small objects
(``--object-bytes`` each). One job, ``{"kind": "manifest", "data": "<server>/list.jsonl"}`` on
``test-delay`` (``item_seconds=0``), goes to ``conveyor serve`` (embedded mode, ``--workers``
local workers, SQLite by default, ``CONVEYOR_ALLOW_PRIVATE_URLS=true``). Measured:

- **time to 201** (the POST reads the manifest's first line only; target < 2 s);
- **RSS growth** of the server process and of its whole process tree (server + workers, from
  ``/proc``), sampled every ``--sample-every`` s from just before the POST until the job is
  terminal: peak minus the sample before the POST (target < 200 MB for the server; the tree is
  shown too);
- **database bytes per item** at the end (results included): SQLite: the database file (plus
  WAL) growth over the job / N, and, after the server stopped, ``dbstat`` per table with its
  indexes; PostgreSQL: ``pg_database_size`` growth / N and ``pg_total_relation_size`` per table
  (target < 1 KB/item);
- the **collect stage** (POST → the job shows it SUCCESS, and the server's own log time) and
  the **job** (POST → terminal; server ``started_at`` → ``finished_at``).

Whether the workers fetched the items' bytes is read from the file server's hit counts
(``objects_fetched``): a tree where workers do not fetch yet measures listing and the item
machinery only, and the figures say so (``workers_fetched``).

    .venv/bin/python bench/manifest_scale.py [--entries 1000000] [--backend sqlite|postgresql]
        [--workers 2] [--timeout 1200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from common import (
    TERMINAL_STATUSES,
    bench_env,
    emit,
    log,
    machine_info,
    object_hits,
    parse_time,
    postgres_database,
    rnd,
    running_server,
    serving,
    temp_dir,
)
from soak import sample

TARGET_SUBMIT_SECONDS = 2.0
TARGET_SERVER_RSS_GROWTH_MB = 200.0
TARGET_DB_BYTES_PER_ITEM = 1024.0
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"


# --------------------------------------------------------------------------- inputs
def write_objects(root: Path, count: int, size: int) -> None:
    folder = root / "o"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        (folder / f"{k}.bin").write_bytes((f"object {k} ".encode() * (size // 8 + 1))[:size])


def write_manifest(path: Path, base: str, entries: int, objects: int) -> int:
    """The JSONL manifest; its size in bytes."""
    with path.open("w") as out:
        for start in range(0, entries, 10_000):
            out.write(
                "".join(
                    json.dumps({"name": f"item-{i}", "uri": f"{base}/o/{i % objects}.bin"}) + "\n"
                    for i in range(start, min(entries, start + 10_000))
                )
            )
    return path.stat().st_size


# --------------------------------------------------------------------------- memory
class Sampler:
    """RSS of the server and its process tree every ``period`` s in a thread (soak.py's ``sample``)."""

    def __init__(self, pid: int, period: float) -> None:
        self.pid, self.period = pid, period
        self.started = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def take(self) -> dict[str, Any]:
        point = sample(self.pid, self.started)
        self.samples.append(point)
        return point

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.take()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def rss_summary(before: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    peak_server = max(s["server_mb"] for s in samples)
    peak_total = max(s["total_mb"] for s in samples)
    end = samples[-1]
    return {
        "before_post": {"server_mb": before["server_mb"], "total_mb": before["total_mb"]},
        "peak": {"server_mb": peak_server, "total_mb": peak_total},
        "end": {"server_mb": end["server_mb"], "total_mb": end["total_mb"], "workers_mb": end["workers_mb"]},
        "server_growth_mb": rnd(peak_server - before["server_mb"], 1),
        "tree_growth_mb": rnd(peak_total - before["total_mb"], 1),
        "peak_worker_growth_mb": rnd(
            max(
                (
                    mb - before["workers_mb"].get(pid, mb)
                    for s in samples
                    for pid, mb in s["workers_mb"].items()
                ),
                default=0.0,
            ),
            1,
        ),
        "samples": len(samples),
        # a thinned timeline for plots: at most 60 points
        "timeline": [
            {"t": s["t"], "server_mb": s["server_mb"], "total_mb": s["total_mb"]}
            for s in samples[:: max(1, len(samples) // 60)]
        ],
    }


# --------------------------------------------------------------------------- database size
def sqlite_files_bytes(data_dir: Path) -> int:
    db = data_dir / "conveyor.db"
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def sqlite_tables(data_dir: Path) -> dict[str, int]:
    """Bytes per table, its indexes included (``dbstat``), on the stopped server's database."""
    with contextlib.closing(sqlite3.connect(data_dir / "conveyor.db")) as conn:
        owners = dict(
            conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table','index')")
        )
        out: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owners.get(name, name)
            out[table] = out.get(table, 0) + int(size)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def pg_sizes(url: str) -> tuple[int, dict[str, int]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            database = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
            rows = conn.execute(
                text(
                    "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC"
                )
            ).all()
    finally:
        engine.dispose()
    return database, {str(name): int(size) for name, size in rows}


# --------------------------------------------------------------------------- the run
def follow(client: httpx.Client, job_id: int, t0: float, timeout: float, poll: float) -> dict[str, Any]:
    """Poll the job until terminal (or ``timeout``): when the collect stage was first seen done,
    when the job was seen terminal, and a thinned progress timeline."""
    seen_collected: float | None = None
    timeline: list[dict[str, Any]] = []
    deadline = t0 + timeout
    job: dict[str, Any] = {}
    while True:
        response = client.get(f"/api/v2/jobs/{job_id}/")
        now = time.monotonic()
        response.raise_for_status()
        job = response.json()
        collect = next(
            (s for s in job.get("progress", {}).get("stages", []) if s.get("key") == "collect"), None
        )
        if seen_collected is None and (collect is None or collect.get("status") == "SUCCESS"):
            seen_collected = now
            log(f"collect stage done after {now - t0:.1f} s: total {job['total']}")
        if not timeline or now - timeline[-1]["t"] - t0 >= 5:
            timeline.append(
                {
                    "t": rnd(now - t0, 1),
                    "total": job["total"],
                    "completed": job["completed"],
                    "failed": job["failed"],
                }
            )
            log(f"t={now - t0:.0f}s {job['status']} total {job['total']} completed {job['completed']}")
        if job["status"] in TERMINAL_STATUSES:
            return {"job": job, "collected_at": seen_collected, "done_at": now, "timeline": timeline}
        if now > deadline:
            return {"job": job, "collected_at": seen_collected, "done_at": None, "timeline": timeline}
        time.sleep(poll)


def collect_log_time(client: httpx.Client, job_id: int) -> str | None:
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        lines = client.get(f"/api/v2/jobs/{job_id}/logs/").json()["results"]
        for line in lines:
            if line["message"].startswith("Collect stage listed"):
                return str(line["created_at"])
    return None


def warm_up(client: httpx.Client) -> None:
    body = {
        "name": "warm-up",
        "pipeline": "test-delay",
        "inputs": [{"name": "w", "kind": "text", "data": "w"}],
        "config": {"item_seconds": 0},
    }
    response = client.post("/api/v2/jobs/?start_now=true", json=body)
    response.raise_for_status()
    follow(client, response.json()["id"], time.monotonic(), 120, 0.05)


@contextlib.contextmanager
def database(backend: str, url: str | None) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    with postgres_database(url or DEFAULT_PG) as fresh:
        yield fresh


def run(args: argparse.Namespace) -> dict[str, Any]:
    with temp_dir("conveyor-manifest-") as folder, database(args.backend, args.database_url) as db_url:
        files, data_dir = folder / "files", folder / "data"
        files.mkdir()
        data_dir.mkdir()
        write_objects(files, args.objects, args.object_bytes)
        with serving(files) as base:
            made = time.monotonic()
            manifest_bytes = write_manifest(files / "list.jsonl", base, args.entries, args.objects)
            log(
                f"manifest of {args.entries:,} entries ({manifest_bytes / 1e6:.1f} MB) "
                f"in {time.monotonic() - made:.1f} s"
            )
            env = bench_env(data_dir, database_url=db_url, extra={"CONVEYOR_ALLOW_PRIVATE_URLS": "true"})
            with running_server(data_dir, workers=args.workers, env=env) as server, server.client() as client:
                warm_up(client)
                db_before = sqlite_files_bytes(data_dir) if db_url is None else pg_sizes(db_url)[0]
                hits_before = object_hits(base)
                with Sampler(server.pid, args.sample_every) as sampler:
                    before = sampler.take()
                    body = {
                        "name": f"manifest-{args.entries}",
                        "pipeline": "test-delay",
                        "inputs": [{"name": "list.jsonl", "kind": "manifest", "data": f"{base}/list.jsonl"}],
                        "config": {"item_seconds": 0},
                    }
                    log(f"POST a job over {base}/list.jsonl")
                    t0 = time.monotonic()
                    response = client.post("/api/v2/jobs/?start_now=true", json=body)
                    t_201 = time.monotonic()
                    if response.status_code != 201:
                        raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
                    job_id = response.json()["id"]
                    log(f"job {job_id}: {response.status_code} in {t_201 - t0:.3f} s")
                    followed = follow(client, job_id, t0, args.timeout, args.poll)
                    sampler.take()
                job = followed["job"]
                collect_logged = collect_log_time(client, job_id)
                hits_after = object_hits(base)
                if db_url is None:
                    db_after, tables = sqlite_files_bytes(data_dir), {}
                else:
                    db_after, tables = pg_sizes(db_url)
                samples = [s for s in sampler.samples if s["t"] >= before["t"]]
            stopped_bytes = sqlite_files_bytes(data_dir) if db_url is None else None
            if db_url is None:
                tables = sqlite_tables(data_dir)
    objects_fetched = hits_after["by_dir"].get("o", 0) - hits_before["by_dir"].get("o", 0)
    manifest_reads = hits_after["by_dir"].get("", 0) - hits_before["by_dir"].get("", 0)
    started, finished = parse_time(job.get("started_at")), parse_time(job.get("finished_at"))
    submitted = parse_time(job.get("submitted_at"))
    n = job["total"] or args.entries
    rss = rss_summary(before, samples)
    growth = db_after - db_before
    items_table = tables.get("items", 0)
    collect_seconds = rnd(followed["collected_at"] - t0, 2) if followed["collected_at"] else None
    end_seconds = rnd(followed["done_at"] - t0, 2) if followed["done_at"] else None
    return {
        "job": {
            "id": job_id,
            "status": job["status"],
            "total": job["total"],
            "completed": job["completed"],
            "failed": job["failed"],
            "finished_within_timeout": followed["done_at"] is not None,
        },
        "manifest_bytes": manifest_bytes,
        "submit_seconds": rnd(t_201 - t0, 3),
        "collect_seen_done_seconds": collect_seconds,
        "collect_logged_at": collect_logged,
        "submitted_at": job.get("submitted_at"),
        "job_end_to_end_seconds": end_seconds,
        "end_to_end_items_per_second": round(n / (followed["done_at"] - t0)) if followed["done_at"] else None,
        "server_started_to_finished_seconds": rnd((finished - started).total_seconds(), 2)
        if started and finished
        else None,
        "server_submitted_to_finished_seconds": rnd((finished - submitted).total_seconds(), 2)
        if submitted and finished
        else None,
        "progress_timeline": followed["timeline"],
        "rss": rss,
        "database": {
            "backend": args.backend,
            "bytes_before": db_before,
            "bytes_after": db_after,
            "growth_bytes": growth,
            "growth_bytes_per_item": rnd(growth / n, 1),
            "items_table_bytes_per_item": rnd(items_table / n, 1) if items_table else None,
            "all_tables_bytes_per_item": rnd(sum(tables.values()) / n, 1) if tables else None,
            "sqlite_file_bytes_after_stop": stopped_bytes,
            "tables_bytes": tables,
        },
        "objects_fetched": objects_fetched,
        "manifest_reads": manifest_reads,
        "workers_fetched": objects_fetched >= n,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000, help="manifest entries (default 1000000)")
    parser.add_argument("--objects", type=int, default=1000, help="distinct objects the entries point at")
    parser.add_argument("--object-bytes", type=int, default=256, help="size of each object (default 256)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL server (default {DEFAULT_PG})")
    parser.add_argument("--timeout", type=float, default=1200, help="give up waiting for the job after (s)")
    parser.add_argument("--poll", type=float, default=0.5, help="job polling period in s (default 0.5)")
    parser.add_argument("--sample-every", type=float, default=0.5, help="RSS sampling period in s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 entries")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop the servers
    if args.quick:
        args.entries = 20_000
    figures = run(args)
    db = figures["database"]
    per_item = db["growth_bytes_per_item"]
    met = {
        "submit_under_2_s": figures["submit_seconds"] < TARGET_SUBMIT_SECONDS,
        "server_rss_growth_under_200_mb": figures["rss"]["server_growth_mb"] < TARGET_SERVER_RSS_GROWTH_MB,
        "db_bytes_per_item_under_1_kb": per_item is not None and per_item < TARGET_DB_BYTES_PER_ITEM,
        "job_succeeded": figures["job"]["status"] == "SUCCESS",
    }
    notes = [
        "RSS growth = peak during the job minus the sample just before the POST; the server process "
        "alone is the target, the tree (server + local workers) is shown too.",
        "DB bytes per item = database growth over the job (results included) / items.",
    ]
    if not figures["workers_fetched"]:
        notes.append(
            f"Workers did NOT fetch the items' bytes in this run ({figures['objects_fetched']:,} objects "
            f"served for {figures['job']['total']:,} items): the job figures measure listing and the "
            "item machinery over empty inputs, not fetching."
        )
    emit(
        {
            "benchmark": "manifest_scale",
            "machine": machine_info(),
            "params": {
                "entries": args.entries,
                "objects": args.objects,
                "object_bytes": args.object_bytes,
                "workers": args.workers,
                "backend": args.backend,
                "pipeline": "test-delay",
                "config": {"item_seconds": 0},
            },
            **figures,
            "targets": {
                "submit_seconds": TARGET_SUBMIT_SECONDS,
                "server_rss_growth_mb": TARGET_SERVER_RSS_GROWTH_MB,
                "db_bytes_per_item": TARGET_DB_BYTES_PER_ITEM,
            },
            "met": met,
            "meets_target": all(met.values()),
            "notes": notes,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
