"""Under load: 200 concurrent pollers for 2 minutes, and what a submit and a worker write-back
cost while they run.

One server (embedded: SQLite and two local workers; ``--database-url``: a temporary PostgreSQL
database) holds ``--jobs`` finished jobs. A load generator in a process of its own (asyncio,
a keep-alive connection per poller, httpx for the SSE streams) runs ``--pollers`` concurrent
clients for ``--seconds``:

- status pollers (60 %), each on one job, one read per ``--interval`` s: half native
  ``GET /api/v2/jobs/{id}/`` sending back the ETag it last got in ``If-None-Match`` as
  Conveyor's Python client and CLI do (an unchanged job answers 304), half Modzy
  ``GET /api/jobs/{identifier}`` without, as modzy-sdk's ``block_until_complete`` polls;
- history pollers (25 %), one page per 2 x ``--interval`` s, cycling through typical filters
  (a status group, a name search, a few orderings, the Modzy history): the reads the history
  indexes serve;
- SSE subscribers (15 %), half on every job's stream (``/api/v2/events/``), half on one
  job's; each reconnects every ``--sse-session`` s with ``Last-Event-ID`` as EventSource does.
  Its latency figure is the time to the stream's first line.

Meanwhile this process submits a small job (``--probe-items`` items, no work per item) every
``--probe-every`` s and polls it to the end: the submit's latency (target p99 < 500 ms under
the load) and the job's time from submit to finished on the server's clock (what the workers'
claims and write-backs cost under the load), against the same probe run idle before the load.
The server's RSS (with its workers) is sampled every second. Errors: any answer other than
200/304 (target 0, and no 5xx), timeouts and broken streams. The generator's own event-loop
lag is reported: on shared cores every client-side latency includes it.

    .venv/bin/python bench/load.py [--pollers 200] [--seconds 120] [--database-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from api_reads import cpu_seconds, seed_jobs
from common import (
    BENCH_DIR,
    bench_env,
    emit,
    log,
    machine_info,
    postgres_database,
    running_server,
    summarize,
    temp_dir,
)
from soak import descendants, rss_kb

SUBMIT_P99_TARGET_MS = 500.0
STATUS_SHARE, HISTORY_SHARE = 0.60, 0.25  # the rest are SSE subscribers
HISTORY_QUERIES = (
    "/api/v2/jobs/?status=terminated&limit=25",
    "/api/v2/jobs/?search=load-1&limit=25",
    "/api/v2/jobs/?ordering=-created_at&limit=25",
    "/api/v2/jobs/?ordering=name&limit=25",
    "/api/v2/jobs/?status=SUCCESS&ordering=-duration&limit=25",
    "/api/jobs/history?per-page=25&sort-by=submittedAt&direction=desc",
)


# --------------------------------------------------------------------------- load generator
class Tally:
    """Latencies (ms) and answer statuses per request kind, and the errors seen."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.counters: dict[str, int] = defaultdict(int)

    def answer(self, kind: str, status: int, ms: float) -> None:
        self.statuses[kind][str(status)] += 1
        if status in (200, 304):
            self.latency[kind].append(ms)
        else:
            self.errors[kind][f"HTTP {status}"] += 1

    def error(self, kind: str, what: str) -> None:
        self.errors[kind][what] += 1


class Connection:
    """A minimal HTTP/1.1 keep-alive client for a poller's GETs: a fraction of httpx's CPU per
    request, so that on 2 shared cores the latencies are the server's, not the generator's."""

    def __init__(self, url: str, key: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        self.preamble = f"Host: {self.host}:{self.port}\r\nAuthorization: Token {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """The answer's status and headers (the body is read and dropped)."""
        try:
            async with asyncio.timeout(30):
                return await self._get(path, headers)
        except BaseException:
            self.close()
            raise

    async def _get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.preamble}{extra}\r\n".encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.rstrip("\r\n").split("\r\n")
        answer = {}
        for line in lines:
            name, _, value = line.partition(":")
            answer[name.strip().lower()] = value.strip()
        if "content-length" in answer:
            await self.reader.readexactly(int(answer["content-length"]))
        elif answer.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        if answer.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split(" ", 2)[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def loop_lag(tally: Tally, stop: float) -> None:
    """How late the generator's event loop wakes up (a 100 ms sleep's overshoot): when it is
    large, the generator itself was short of CPU and every latency includes that much."""
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        await asyncio.sleep(0.1)
        tally.latency["generator_loop_lag"].append((time.perf_counter() - t0) * 1000 - 100)


async def poller(
    client: Connection,
    tally: Tally,
    kind: str,
    paths: list[str],
    interval: float,
    stop: float,
    seed: int,
    *,
    conditional: bool,
) -> None:
    """One client reading ``paths`` in turn, one per ``interval`` s; with ``conditional`` it
    sends back the ETag it last got for a path."""
    rng = random.Random(seed)
    etags: dict[str, str] = {}
    await asyncio.sleep(rng.random() * interval)  # spread the pollers over the interval
    turn = 0
    while time.monotonic() < stop:
        began = time.monotonic()
        path = paths[turn % len(paths)]
        turn += 1
        headers = {"If-None-Match": etags[path]} if conditional and path in etags else {}
        t0 = time.perf_counter()
        try:
            status, answer = await client.get(path, headers)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            tally.error(kind, type(exc).__name__)
        else:
            tally.answer(kind, status, (time.perf_counter() - t0) * 1000)
            if status == 200 and "etag" in answer:
                etags[path] = answer["etag"]
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


async def sse_subscriber(
    client: httpx.AsyncClient, tally: Tally, path: str, session: float, stop: float, seed: int
) -> None:
    """EventSource-like: stream for ``session`` s, then reconnect with ``Last-Event-ID``."""
    rng = random.Random(seed)
    await asyncio.sleep(rng.random() * 2)
    last_id: str | None = None
    while time.monotonic() < stop:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        ends = min(stop, time.monotonic() + session * (0.5 + rng.random()))
        t0 = time.perf_counter()
        first = True
        try:
            async with asyncio.timeout(max(0.1, ends - time.monotonic())):
                async with client.stream("GET", path, headers=headers) as response:
                    if response.status_code != 200:
                        tally.answer("sse", response.status_code, 0)
                        await asyncio.sleep(2)
                        continue
                    async for line in response.aiter_lines():
                        if first:
                            tally.answer("sse", 200, (time.perf_counter() - t0) * 1000)
                            first = False
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                            tally.counters["sse_events"] += 1
                        elif line.startswith(": keep-alive"):
                            tally.counters["sse_keepalives"] += 1
                    tally.error("sse", "stream ended by the server")
        except TimeoutError:
            pass  # the session's end: reconnect, as a browser's EventSource does after a drop
        except httpx.HTTPError as exc:
            tally.error("sse", type(exc).__name__)
        tally.counters["sse_connections"] += 1


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    targets = json.loads(Path(args.targets).read_text())
    native = [f"/api/v2/jobs/{job['id']}/" for job in targets]
    modzy = [f"/api/jobs/{job['job_identifier']}" for job in targets]
    statuses = round(args.pollers * STATUS_SHARE)
    histories = round(args.pollers * HISTORY_SHARE)
    streams = args.pollers - statuses - histories
    tally = Tally()
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    timeout = httpx.Timeout(30.0, read=30.0)  # > the SSE keep-alive period (15 s)
    headers = {"Authorization": f"Token {args.key}"}
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        began = time.monotonic()
        stop = began + args.seconds
        tasks = []
        for i in range(statuses):
            job = i // 2 % len(targets)
            if i % 2 == 0:
                kind, path = "status_native", native[job]
            else:
                kind, path = "status_modzy", modzy[job]
            connection = Connection(args.url, args.key)
            tasks.append(
                poller(connection, tally, kind, [path], args.interval, stop, i, conditional=i % 2 == 0)
            )
        for i in range(histories):  # each cycles through the filters, from a different one
            paths = [
                *HISTORY_QUERIES[i % len(HISTORY_QUERIES) :],
                *HISTORY_QUERIES[: i % len(HISTORY_QUERIES)],
            ]
            tasks.append(
                poller(
                    Connection(args.url, args.key),
                    tally,
                    "history",
                    paths,
                    2 * args.interval,
                    stop,
                    1000 + i,
                    conditional=True,
                )
            )
        for i in range(streams):
            path = (
                "/api/v2/events/" if i % 2 == 0 else f"/api/v2/jobs/{targets[i % len(targets)]['id']}/events/"
            )
            tasks.append(sse_subscriber(client, tally, path, args.sse_session, stop, 2000 + i))
        tasks.append(loop_lag(tally, stop))
        gathered = asyncio.gather(*tasks)
        # SIGTERM ends the load early with the figures so far (history.py --with-load runs it
        # for as long as its own measurement takes).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, gathered.cancel)
        try:
            await asyncio.wait_for(gathered, args.seconds + 60)
        except TimeoutError:
            tally.error("generator", "did not stop in time")
        except asyncio.CancelledError:
            pass
        wall = time.monotonic() - began
    lag = tally.latency.pop("generator_loop_lag", [])
    kinds = sorted(set(tally.statuses) | set(tally.errors))
    return {
        "generator_loop_lag_ms": summarize(lag, (50, 99)),
        "clients": {
            "status_native": (statuses + 1) // 2,
            "status_modzy": statuses // 2,
            "history": histories,
            "sse": streams,
        },
        "seconds": round(wall, 1),
        "kinds": {
            kind: {
                "latency_ms": summarize(tally.latency[kind], (50, 90, 99)),
                "requests_per_second": round(len(tally.latency[kind]) / wall, 1),
                "statuses": dict(tally.statuses[kind]),
                "errors": dict(tally.errors[kind]),
            }
            for kind in kinds
        },
        "counters": dict(tally.counters),
    }


# --------------------------------------------------------------------------- probes
class Probe:
    """A small job submitted every ``every`` s and polled to the end, in a thread of its own."""

    def __init__(self, url: str, key: str, items: int, every: float) -> None:
        self.url, self.key, self.items, self.every = url, key, items, every
        self.submit_ms: list[float] = []
        self.finish_ms: list[float] = []  # the server's created_at -> finished_at
        self.seen_ms: list[float] = []  # the client's POST -> SUCCESS seen (50 ms polls)
        self.errors: dict[str, int] = defaultdict(int)
        self.stopping = threading.Event()

    def one(self, client: httpx.Client, index: int) -> None:
        body = {
            "name": f"probe-{index}",
            "pipeline": "test-delay",
            "inputs": [{"name": f"in-{i}", "kind": "text", "data": f"x{i}"} for i in range(self.items)],
            "config": {"item_seconds": 0},
        }
        t0 = time.perf_counter()
        try:
            response = client.post("/api/v2/jobs/?start_now=true", json=body)
        except httpx.HTTPError as exc:
            self.errors[f"submit {type(exc).__name__}"] += 1
            return
        if response.status_code != 201:
            self.errors[f"submit HTTP {response.status_code}"] += 1
            return
        self.submit_ms.append((time.perf_counter() - t0) * 1000)
        job_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                job = client.get(f"/api/v2/jobs/{job_id}/").json()
            except (httpx.HTTPError, ValueError) as exc:
                self.errors[f"poll {type(exc).__name__}"] += 1
                time.sleep(0.05)
                continue
            if job["status"] == "SUCCESS":
                self.seen_ms.append((time.perf_counter() - t0) * 1000)
                created, finished = job["created_at"], job["finished_at"]
                if created and finished:
                    delta = datetime.fromisoformat(finished) - datetime.fromisoformat(created)
                    self.finish_ms.append(delta.total_seconds() * 1000)
                return
            if job["status"] in ("FAILURE", "REVOKED"):
                self.errors[f"job {job['status']}"] += 1
                return
            time.sleep(0.05)
        self.errors["job not finished in 120 s"] += 1

    def run(self, count: int | None = None) -> None:
        """``count`` probes back to back (idle), or one per ``every`` s until ``stop()``."""
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.key}"}, timeout=60
        ) as client:
            index = 0
            while not self.stopping.is_set() and (count is None or index < count):
                began = time.monotonic()
                self.one(client, index)
                index += 1
                if count is None:
                    self.stopping.wait(max(0.0, self.every - (time.monotonic() - began)))

    def figures(self) -> dict[str, Any]:
        return {
            "jobs": len(self.submit_ms),
            "submit_ms": summarize(self.submit_ms, (50, 90, 99)),
            "submit_to_finished_ms": summarize(self.finish_ms, (50, 90, 99)),
            "client_submit_to_success_seen_ms": summarize(self.seen_ms, (50, 90, 99)),
            "errors": dict(self.errors),
        }


def tree_cpu_seconds(server_pid: int) -> float:
    """CPU time so far of the server and every process below it (its workers)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in [server_pid, *descendants(server_pid)])


def rss_mb(server_pid: int) -> dict[str, float]:
    """The server's RSS and its whole process tree's (server + workers), in MB."""
    server = rss_kb(server_pid) or 0
    tree = server + sum(rss_kb(pid) or 0 for pid in descendants(server_pid))
    return {"server_mb": round(server / 1024, 1), "total_mb": round(tree / 1024, 1)}


# --------------------------------------------------------------------------- one backend
def generator_command(
    url: str,
    key: str,
    targets: Path,
    *,
    pollers: int,
    seconds: float,
    interval: float = 1.0,
    sse_session: float = 30,
) -> list[str]:
    """The load generator's process (``load.py --generate``) against the server at ``url``,
    polling the jobs of ``targets`` (a JSON list of ``{"id", "job_identifier"}``); it prints its
    figures as JSON on stdout when its ``seconds`` are over, or at SIGTERM."""
    return [
        sys.executable,
        str(BENCH_DIR / "load.py"),
        "--generate",
        *("--url", url, "--key", key, "--targets", str(targets)),
        *("--pollers", str(pollers), "--seconds", str(seconds)),
        *("--interval", str(interval), "--sse-session", str(sse_session)),
    ]


def measure(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    with temp_dir() as data_dir:
        env = bench_env(data_dir, database_url=database_url)
        with running_server(data_dir, workers=args.workers, env=env) as server, server.client() as client:
            log(f"seeding {args.jobs} jobs")
            targets = seed_jobs(client, args.jobs, 5, prefix="load")
            targets_file = data_dir / "targets.json"
            targets_file.write_text(
                json.dumps([{"id": j["id"], "job_identifier": j["job_identifier"]} for j in targets])
            )
            key = server.key
            assert server.process is not None
            pid = server.process.pid

            log(f"idle probe: {args.idle_probes} jobs of {args.probe_items} items")
            idle = Probe(server.url, key, args.probe_items, args.probe_every)
            idle.run(count=args.idle_probes)
            rss_start = rss_mb(pid)

            log(f"load: {args.pollers} pollers for {args.seconds:g} s")
            generator = subprocess.Popen(
                generator_command(
                    server.url,
                    key,
                    targets_file,
                    pollers=args.pollers,
                    seconds=args.seconds,
                    interval=args.interval,
                    sse_session=args.sse_session,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            load_began = time.monotonic()
            server_cpu_before, tree_cpu_before = cpu_seconds(pid) or 0.0, tree_cpu_seconds(pid)
            time.sleep(min(5.0, args.seconds / 10))  # let the pollers ramp up before probing
            loaded = Probe(server.url, key, args.probe_items, args.probe_every)
            prober = threading.Thread(target=loaded.run, daemon=True)
            prober.start()
            rss_samples = []
            while generator.poll() is None:
                rss_samples.append(rss_mb(pid))
                time.sleep(1)
            load_wall = time.monotonic() - load_began
            server_cpu = ((cpu_seconds(pid) or 0.0) - server_cpu_before) / load_wall
            tree_cpu = (tree_cpu_seconds(pid) - tree_cpu_before) / load_wall
            loaded.stopping.set()
            prober.join(timeout=150)
            out, _ = generator.communicate(timeout=60)
            if generator.returncode != 0:
                raise RuntimeError(f"load generator failed ({generator.returncode})")
            load_figures = json.loads(out)
            rss_end = rss_mb(pid)
    peak = max(rss_samples, key=lambda s: s["total_mb"], default=rss_end)
    errors = sum(sum(kind["errors"].values()) for kind in load_figures["kinds"].values())
    server_errors = sum(
        count
        for kind in load_figures["kinds"].values()
        for status, count in kind["statuses"].items()
        if status.startswith("5")
    )
    probe = loaded.figures()
    return {
        **load_figures,
        "errors": errors + sum(loaded.errors.values()),
        "server_errors_5xx": server_errors,
        "rss": {"before_load": rss_start, "peak": peak, "end": rss_end},
        # Cores the server (and with its workers) used during the load: well under 1 on a
        # machine whose other processes take the cores means the server was short of CPU.
        "server_cores_used": round(server_cpu, 2),
        "server_tree_cores_used": round(tree_cpu, 2),
        "probe_idle": idle.figures(),
        "probe_under_load": probe,
        "submit_p99_ms": probe["submit_ms"].get("p99"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, default=200, help="concurrent clients (default 200)")
    parser.add_argument("--seconds", type=float, default=120, help="duration of the load (default 120)")
    parser.add_argument("--interval", type=float, default=1.0, help="a status poller's period, s (default 1)")
    parser.add_argument(
        "--sse-session", type=float, default=30, help="an SSE stream's mean life, s (default 30)"
    )
    parser.add_argument("--jobs", type=int, default=200, help="finished jobs polled (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--probe-items", type=int, default=5, help="items of a probe job (default 5)")
    parser.add_argument("--probe-every", type=float, default=2.0, help="a probe job per N s (default 2)")
    parser.add_argument("--idle-probes", type=int, default=10, help="probe jobs before the load (default 10)")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL (a temporary database) instead of SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 s, 50 jobs, 5 idle probes")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)  # the generator process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        emit(asyncio.run(generate(args)))
        return
    if args.quick:
        args.seconds, args.jobs, args.idle_probes = 20.0, 50, 5

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(args.database_url)) if args.database_url else None
        figures = measure(args, url)
    database = "postgresql (temporary database)" if args.database_url else "sqlite (embedded default)"
    submit_p99 = figures["submit_p99_ms"]
    emit(
        {
            "benchmark": "load",
            "machine": machine_info(),
            "params": {
                "pollers": args.pollers,
                "seconds": args.seconds,
                "status_poll_interval_s": args.interval,
                "history_poll_interval_s": 2 * args.interval,
                "sse_session_s": args.sse_session,
                "jobs": args.jobs,
                "workers": args.workers,
                "probe_items": args.probe_items,
                "probe_every_s": args.probe_every,
                "database": database,
                "client": "one asyncio process (httpx.AsyncClient) on the same machine as the server",
            },
            **figures,
            "target": f"0 errors, no 5xx, submit p99 < {SUBMIT_P99_TARGET_MS:g} ms under the load",
            "met": figures["errors"] == 0
            and figures["server_errors_5xx"] == 0
            and submit_p99 is not None
            and submit_p99 < SUBMIT_P99_TARGET_MS,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
