"""Soak: mixed load for N minutes against one server; memory of server and workers, p99 per kind.

One server (embedded mode, SQLite unless ``--database-url``, ``--workers`` local workers). A
bounded client (a fixed set of threads, each pausing between requests) runs for ``--minutes``:

- submit: one thread POSTs a ``test-delay`` job of ``--job-items`` items every ``--submit-every`` s;
- poll: ``--pollers`` threads GET ``/api/v2/jobs/{id}/`` of recently submitted jobs;
- history: ``--history-clients`` threads GET ``/api/v2/jobs/`` pages with rotating filters;
- sse: ``--sse-streams`` streams stay open on ``/api/v2/events/``; one of them records each
  submitted job's ``PENDING`` event (latency from the POST's answer: ``sse_event``), and one
  thread keeps opening a stream, waiting for its headers (``sse_connect``), reading 5 s and
  closing it (connection churn).

Every ``--sample-every`` s the resident set size (``VmRSS`` in ``/proc/<pid>/status``) of the
server process and of each of its descendants (the workers) is recorded. Reported: RSS at the
start and the end of the load and the timeline, p50/p99/max latency and error count per kind
(any non-2xx answer or transport error), and whether every submitted job finished. "Flat" is
read as: total RSS grew by at most ``FLAT_SECOND_HALF`` over the second half of the run (the
first half is allowed to warm caches up), and the report shows the whole-run growth beside it.

    .venv/bin/python bench/soak.py [--minutes 10] [--seconds S (overrides --minutes)] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    TERMINAL_STATUSES,
    bench_env,
    emit,
    log,
    machine_info,
    postgres_database,
    running_server,
    summarize,
    temp_dir,
)

FLAT_SECOND_HALF = 0.05
KINDS = ("submit", "poll", "history", "sse_connect", "sse_event")
HISTORY_FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "SUCCESS"},
    {"status": "pending"},
    {"ordering": "-updated_at"},
    {"search": "soak-1"},
    {"pipeline": "test-delay", "ordering": "name"},
]


# --------------------------------------------------------------------------- memory
def rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def descendants(root: int) -> dict[int, str]:
    """pid -> short command line of every process below ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            names[int(entry.name)] = cmdline.strip()[:120]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = names.get(pid, "")
                frontier.append(pid)
    return found


def role(cmdline: str) -> str:
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "worker"
    return cmdline.split(" ")[0].rsplit("/", 1)[-1] or "?"


def sample(server_pid: int, started: float) -> dict[str, Any]:
    below = descendants(server_pid)
    children = {pid: rss_kb(pid) for pid in below}
    children_kb = {pid: kb for pid, kb in children.items() if kb is not None}
    server = rss_kb(server_pid) or 0
    return {
        "t": round(time.monotonic() - started, 1),
        "server_mb": round(server / 1024, 1),
        "workers_mb": {str(pid): round(kb / 1024, 1) for pid, kb in sorted(children_kb.items())},
        "roles": {str(pid): role(below[pid]) for pid in sorted(children_kb)},
        "total_mb": round((server + sum(children_kb.values())) / 1024, 1),
    }


# --------------------------------------------------------------------------- load
class Soak:
    def __init__(self, url: str, key: str, args: argparse.Namespace) -> None:
        self.url, self.args = url, args
        self.headers = {"Authorization": f"Token {key}"}
        self.stop = threading.Event()  # the load stops
        self.streams_stop = threading.Event()  # the open streams stop (after the backlog drained)
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.error_samples: list[str] = []
        self.recent: collections.deque[int] = collections.deque(maxlen=50)
        self.submitted: dict[int, float] = {}  # job id -> when the POST was answered
        self.pending_events: dict[int, float] = {}  # job id -> when its PENDING event arrived

    def record(self, kind: str, ms: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None and ms is not None:
                self.latency[kind].append(ms)
            else:
                self.errors[kind] += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{kind}: {error}")

    def timed(
        self, client: httpx.Client, kind: str, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.record(kind, None, f"{type(exc).__name__}: {exc}")
            return None
        ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 300:
            self.record(kind, None, f"{method} {url} -> {response.status_code} {response.text[:200]}")
            return None
        self.record(kind, ms)
        return response

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def submitter(self) -> None:
        index = 0
        with self.client() as client:
            while not self.stop.is_set():
                body = {
                    "name": f"soak-{index}",
                    "pipeline": "test-delay",
                    "inputs": [
                        {"name": f"i{i}", "kind": "text", "data": f"soak {index} {i}"}
                        for i in range(self.args.job_items)
                    ],
                    "config": {"item_seconds": self.args.item_seconds},
                }
                response = self.timed(client, "submit", "POST", "/api/v2/jobs/?start_now=true", json=body)
                if response is not None:
                    job_id = int(response.json()["id"])
                    with self.lock:
                        self.submitted[job_id] = time.monotonic()
                    self.recent.append(job_id)
                index += 1
                self.stop.wait(self.args.submit_every)

    def poller(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.client() as client:
            while not self.stop.is_set():
                if self.recent:
                    job_id = rng.choice(list(self.recent))
                    self.timed(client, "poll", "GET", f"/api/v2/jobs/{job_id}/")
                self.stop.wait(self.args.poll_pause)

    def historian(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.client() as client:
            while not self.stop.is_set():
                params = {**rng.choice(HISTORY_FILTERS), "limit": 50}
                self.timed(client, "history", "GET", "/api/v2/jobs/", params=params)
                self.stop.wait(self.args.history_pause)

    def stream(self, record: bool, opened: threading.Event) -> None:
        """One long-lived events stream; the recording one notes each job's PENDING arrival."""
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.Client(headers=self.headers, timeout=None) as client,
            client.stream("GET", f"{self.url}/api/v2/events/") as response,
        ):
            opened.set()
            kind = ""
            for line in response.iter_lines():
                if self.streams_stop.is_set():
                    return
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif record and kind == "status" and line.startswith("data:"):
                    data = json.loads(line[5:])
                    if data.get("to_status") == "PENDING":
                        with self.lock:
                            self.pending_events.setdefault(int(data["job_id"]), time.monotonic())

    def churner(self) -> None:
        """Open a stream, time its headers, read for a few seconds, close; again.

        Only the opening counts: an error before the headers is an ``sse_connect`` error; a read
        that times out afterwards (no event for a while: the stream is idle) just ends the hold.
        """
        client = httpx.Client(headers=self.headers, timeout=httpx.Timeout(30, read=10))
        while not self.stop.is_set():
            started = time.perf_counter()
            connected = False
            try:
                with client.stream("GET", f"{self.url}/api/v2/events/") as response:
                    connected = True
                    ms = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        self.record("sse_connect", None, f"events -> {response.status_code}")
                    else:
                        self.record("sse_connect", ms)
                        until = time.monotonic() + 5
                        for _ in response.iter_lines():
                            if time.monotonic() > until or self.stop.is_set():
                                break
            except httpx.HTTPError as exc:
                if not connected:
                    self.record("sse_connect", None, f"{type(exc).__name__}: {exc}")
            self.stop.wait(0.5)
        client.close()

    def event_latencies(self) -> None:
        with self.lock:
            for job_id, answered in self.submitted.items():
                arrived = self.pending_events.get(job_id)
                if arrived is not None:
                    # The event can beat the POST's answer to the client: then the latency is 0.
                    self.latency["sse_event"].append(max(0.0, (arrived - answered) * 1000))


def run(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    with temp_dir() as data_dir:
        env = bench_env(data_dir, database_url=database_url)
        with running_server(data_dir, workers=args.workers, env=env) as server:
            soak = Soak(server.url, server.key, args)
            with server.client() as client:  # warm-up: workers start and load test-delay
                warm = client.post(
                    "/api/v2/jobs/?start_now=true",
                    json={
                        "name": "warm-up",
                        "pipeline": "test-delay",
                        "inputs": [{"name": "x", "kind": "text", "data": "x"}],
                    },
                )
                warm.raise_for_status()
                deadline = time.monotonic() + 120
                while (
                    client.get(f"/api/v2/jobs/{warm.json()['id']}/").json()["status"] not in TERMINAL_STATUSES
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError("warm-up job did not finish")
                    time.sleep(0.1)
            started = time.monotonic()
            timeline = [sample(server.pid, started)]
            log(f"start: server {timeline[0]['server_mb']} MB, total {timeline[0]['total_mb']} MB")
            threads: list[threading.Thread] = []
            recorder_open = threading.Event()
            threads.append(threading.Thread(target=soak.stream, args=(True, recorder_open), daemon=True))
            for _ in range(max(0, args.sse_streams - 1)):
                threads.append(
                    threading.Thread(target=soak.stream, args=(False, threading.Event()), daemon=True)
                )
            threads[0].start()
            recorder_open.wait(30)
            for thread in threads[1:]:
                thread.start()
            bounded = [
                threading.Thread(target=soak.submitter, daemon=True),
                threading.Thread(target=soak.churner, daemon=True),
                *(threading.Thread(target=soak.poller, args=(i,), daemon=True) for i in range(args.pollers)),
                *(
                    threading.Thread(target=soak.historian, args=(100 + i,), daemon=True)
                    for i in range(args.history_clients)
                ),
            ]
            for thread in bounded:
                thread.start()
            end = started + args.seconds
            while time.monotonic() < end:
                time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
                timeline.append(sample(server.pid, started))
                counts = {k: len(v) for k, v in soak.latency.items()}
                log(f"t={timeline[-1]['t']} s: total RSS {timeline[-1]['total_mb']} MB, requests {counts}")
            soak.stop.set()
            for thread in bounded:
                thread.join(timeout=40)
            # Every submitted job must end: wait for the backlog, then count.
            statuses: dict[str, int] = {}
            with server.client() as client:
                drain_deadline = time.monotonic() + args.drain_seconds
                for job_id in sorted(soak.submitted):
                    while True:
                        status = client.get(f"/api/v2/jobs/{job_id}/").json()["status"]
                        if status in TERMINAL_STATUSES or time.monotonic() > drain_deadline:
                            break
                        time.sleep(0.1)
                    statuses[status] = statuses.get(status, 0) + 1
            soak.streams_stop.set()
            soak.event_latencies()
    first, last = timeline[0], timeline[-1]
    middle = min(timeline, key=lambda s: abs(s["t"] - last["t"] / 2))
    second_half = (last["total_mb"] - middle["total_mb"]) / max(middle["total_mb"], 1)
    return {
        "duration_seconds": round(last["t"], 1),
        "rss": {
            "start": first,
            "middle": middle,
            "end": last,
            "total_growth_whole_run": round(
                (last["total_mb"] - first["total_mb"]) / max(first["total_mb"], 1), 4
            ),
            "total_growth_second_half": round(second_half, 4),
            "server_growth_whole_run": round(
                (last["server_mb"] - first["server_mb"]) / max(first["server_mb"], 1), 4
            ),
            "timeline": timeline,
        },
        "latency_ms": {kind: summarize(values, (50, 99)) for kind, values in soak.latency.items()},
        "errors": soak.errors,
        "errors_total": sum(soak.errors.values()),
        "error_samples": soak.error_samples,
        "jobs_submitted": len(soak.submitted),
        "jobs_by_final_status": statuses,
        "flat_second_half_limit": FLAT_SECOND_HALF,
        "flat": second_half <= FLAT_SECOND_HALF,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10, help="length of the load (default 10)")
    parser.add_argument("--seconds", type=float, default=None, help="length in seconds (overrides --minutes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--submit-every", type=float, default=1.0, help="s between submissions (default 1)")
    parser.add_argument("--job-items", type=int, default=20, help="items per submitted job (default 20)")
    parser.add_argument("--item-seconds", type=float, default=0.005, help="test-delay work per item")
    parser.add_argument("--pollers", type=int, default=3, help="status-polling threads (default 3)")
    parser.add_argument("--poll-pause", type=float, default=0.05, help="s between one poller's GETs")
    parser.add_argument("--history-clients", type=int, default=1, help="history-reading threads (default 1)")
    parser.add_argument("--history-pause", type=float, default=0.2, help="s between one reader's pages")
    parser.add_argument("--sse-streams", type=int, default=5, help="long-lived event streams (default 5)")
    parser.add_argument("--sample-every", type=float, default=10, help="s between RSS samples (default 10)")
    parser.add_argument("--drain-seconds", type=float, default=120, help="wait for the backlog at the end")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL (a temporary database) instead of SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 45 s, RSS every 5 s")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 45.0 if args.quick else args.minutes * 60
    if args.quick:
        args.sample_every = min(args.sample_every, 5.0)

    if args.database_url:
        with postgres_database(args.database_url) as url:
            figures = run(args, url)
        database = "postgresql (temporary database)"
    else:
        figures = run(args, None)
        database = "sqlite (embedded default)"
    emit(
        {
            "benchmark": "soak",
            "machine": machine_info(),
            "params": {
                "seconds": args.seconds,
                "workers": args.workers,
                "database": database,
                "submit_every_seconds": args.submit_every,
                "job_items": args.job_items,
                "item_seconds": args.item_seconds,
                "pollers": args.pollers,
                "poll_pause_seconds": args.poll_pause,
                "history_clients": args.history_clients,
                "history_pause_seconds": args.history_pause,
                "sse_streams": args.sse_streams,
                "sample_every_seconds": args.sample_every,
            },
            **figures,
            "notes": [
                "RSS from /proc/<pid>/status (VmRSS) of the server and every process below it.",
                "sse_event: POST answered -> the job's PENDING status event on an open stream.",
                "sse_connect: request sent -> response headers of a new /api/v2/events/ stream "
                "(one client, its connection closed with each stream).",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
