"""Where the time goes in the no-op path, without HTTP or worker processes (a diagnostic, not a figure).

In one process, on a temporary SQLite database (or, with ``--database-url``, a temporary
PostgreSQL database created and dropped around the run):

1. submit: ``JobService.submit`` of N text inputs (what ``POST /api/v2/jobs/`` calls after parsing);
2. work: ``ChunkExecutor.claim_and_run`` in a loop until the queue is empty (what one local worker
   process does), so there is no lock contention with a second worker.

Each phase is timed, its store calls are timed one by one (claim, pending_items, write_back, …),
and it is run under cProfile; the top functions by own time and by cumulative time are printed.

    .venv/bin/python bench/profile_core.py [--items 100000] [--top 25] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import emit, log, machine_info, postgres_database, rnd, temp_dir

STORE_CALLS = ("claim", "pending_items", "write_back", "release", "heartbeat")


class Profiler:
    """cProfile, or nothing (``--no-profile``) so the same code path gives unprofiled timings."""

    def __init__(self, on: bool) -> None:
        self.profile = cProfile.Profile() if on else None

    def enable(self) -> None:
        if self.profile:
            self.profile.enable()

    def disable(self) -> None:
        if self.profile:
            self.profile.disable()


def top(profiler: Profiler, key: str, limit: int) -> list[dict[str, Any]]:
    if profiler.profile is None:
        return []
    stats = pstats.Stats(profiler.profile)
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "ncalls": ncalls,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
            }
        )
    rows.sort(key=lambda r: r["tottime_s" if key == "tottime" else "cumtime_s"], reverse=True)
    return rows[:limit]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


class Timers:
    """Wall time per wrapped method (calls, total seconds)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, obj: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(obj, name)

        @functools.wraps(original)
        def timed(*args: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        setattr(obj, name, timed)

    def report(self, total: float) -> dict[str, Any]:
        return {
            name: {
                "calls": self.calls[name],
                "seconds": rnd(self.seconds[name]),
                "share_of_phase": round(self.seconds[name] / total, 3) if total else None,
            }
            for name in sorted(self.seconds, key=lambda n: -self.seconds[n])
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25, help="functions listed per table (default 25)")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true", help="time the phases without cProfile")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5000 items")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server + database name prefix")
    args = parser.parse_args(argv)
    n = 5000 if args.quick else args.items

    from conveyor.dispatch.base import NullDispatcher
    from conveyor.services.bootstrap import prepare
    from conveyor.services.jobs import JobService
    from conveyor.services.submission import InputSpec, JobRequest
    from conveyor.settings import Settings
    from conveyor.store import Store
    from conveyor.worker.executor import ChunkExecutor

    with temp_dir() as data_dir, contextlib.ExitStack() as stack:
        extra: dict[str, Any] = {"chunk_size": args.chunk_size} if args.chunk_size else {}
        if args.database_url:
            extra["database_url"] = stack.enter_context(postgres_database(args.database_url))
        settings = Settings(data_dir=Path(data_dir), **extra)
        store = Store(settings)
        prepare(store)
        account_id, _ = store.auth.ensure_defaults()
        principal = store.auth.authenticate(
            store.auth.create_key(account_id=account_id, name="profile", role="owner", project_id=None).token
        )
        service = JobService(store, NullDispatcher(), settings)
        request = JobRequest(
            name="profile",
            pipeline="test-delay",
            inputs=[InputSpec(kind="text", data=f"payload {i}", name=f"item-{i}") for i in range(n)],
            config={"item_seconds": 0},
        )

        log(f"submit of {n} items under cProfile")
        submit_profile = Profiler(not args.no_profile)
        started = time.perf_counter()
        submit_profile.enable()
        job_id = service.submit(principal, request, start_now=True)
        submit_profile.disable()
        submit_seconds = time.perf_counter() - started

        log("worker loop under cProfile")
        executor = ChunkExecutor(store, settings, worker_name="profile:0")
        executor.warm.get("test-delay")  # load outside the measurement, as a warm worker would
        timers = Timers()
        for name in STORE_CALLS:
            timers.wrap(store.chunks, name)
        work_profile = Profiler(not args.no_profile)
        chunks = 0
        started = time.perf_counter()
        work_profile.enable()
        while executor.claim_and_run() is not None:
            chunks += 1
        work_profile.disable()
        work_seconds = time.perf_counter() - started
        job = store.jobs.get(service_scope(principal), job_id)
        store.close()

    emit(
        {
            "benchmark": "profile_core",
            "machine": machine_info(),
            "params": {
                "items": n,
                "chunk_size": settings.chunk_size,
                "database": "postgresql, in-process" if args.database_url else "sqlite, in-process",
                "profiled": not args.no_profile,
            },
            "submit": {
                "seconds": rnd(submit_seconds),
                "items_per_second": round(n / submit_seconds),
                "top_by_tottime": top(submit_profile, "tottime", args.top),
                "top_by_cumtime": top(submit_profile, "cumtime", args.top),
            },
            "work": {
                "status": job["status"],
                "completed": job["completed"],
                "chunks": chunks,
                "seconds": rnd(work_seconds),
                "items_per_second_one_process": round(n / work_seconds),
                "store_calls": timers.report(work_seconds),
                "top_by_tottime": top(work_profile, "tottime", args.top),
                "top_by_cumtime": top(work_profile, "cumtime", args.top),
            },
            "notes": [
                "cProfile adds overhead (roughly 1.5-2x here); use the phase seconds without it from "
                "noop_throughput.py for absolute figures and this for the split.",
            ],
        }
    )


def service_scope(principal: Any) -> Any:
    from conveyor.domain.access import scope_of

    return scope_of(principal)


if __name__ == "__main__":
    sys.exit(main())
