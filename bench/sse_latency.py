"""Live events: change committed → event received by a Server-Sent-Events client, p50/p99.

One server (SQLite, one local worker). ``--subscribers`` idle streams are held open besides the
measured one, to show that the cost is one fan-out per process, not one poll per client. For each
of ``--jobs`` CREATED jobs the client POSTs ``/run/`` (the PENDING transition is committed inside
that request) and measures from the POST's answer to the arrival of that job's ``status: PENDING``
event on the account-wide stream ``/api/v2/events/``. The job is then canceled (REVOKED) and the
same is measured for its CANCELING (or REVOKED) event.

    .venv/bin/python bench/sse_latency.py [--jobs 100] [--subscribers 50]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import httpx

from common import emit, log, machine_info, running_server, summarize, temp_dir


class Listener(threading.Thread):
    """Reads one stream; records when each (job, status) event arrived."""

    def __init__(self, url: str, key: str, record: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.record = url, key, record
        self.arrivals: dict[tuple[int, str], float] = {}
        self.opened = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        headers = {"Authorization": f"Token {self.key}"}
        with httpx.stream("GET", f"{self.url}/api/v2/events/", headers=headers, timeout=None) as response:
            self.opened.set()
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and self.record and kind == "status":
                    data = json.loads(line[5:])
                    with self.lock:
                        self.arrivals[(data["job_id"], data["to_status"])] = time.monotonic()

    def wait_for(self, job_id: int, *statuses: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for status in statuses:
                    if (job_id, status) in self.arrivals:
                        return self.arrivals[(job_id, status)]
            time.sleep(0.001)
        raise TimeoutError(f"no {statuses} event for job {job_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="20 jobs, 10 idle subscribers")
    args = parser.parse_args()
    jobs, subscribers = (20, 10) if args.quick else (args.jobs, args.subscribers)

    with temp_dir() as data_dir, running_server(data_dir, workers=1) as server:
        measured = Listener(server.url, server.key, record=True)
        idle = [Listener(server.url, server.key, record=False) for _ in range(subscribers)]
        for listener in [measured, *idle]:
            listener.start()
            listener.opened.wait(30)
        log(f"{subscribers + 1} streams open; measuring {jobs} jobs")
        run_ms: list[float] = []
        cancel_ms: list[float] = []
        body: dict[str, Any] = {
            "pipeline": "test-delay",
            "inputs": [{"name": "x", "kind": "text", "data": "x"}],
            "config": {"item_seconds": 30},
        }
        with server.client() as client:
            for index in range(jobs):
                job = client.post("/api/v2/jobs/", json={**body, "name": f"sse-{index}"}).json()
                client.post(f"/api/v2/jobs/{job['id']}/run/").raise_for_status()
                committed = time.monotonic()
                run_ms.append((measured.wait_for(job["id"], "PENDING") - committed) * 1000)
                client.post(f"/api/v2/jobs/{job['id']}/cancel/").raise_for_status()
                committed = time.monotonic()
                # The request commits CANCELING (a worker holds the job) or REVOKED (none does yet).
                arrived = measured.wait_for(job["id"], "CANCELING", "REVOKED")
                cancel_ms.append((arrived - committed) * 1000)
                measured.wait_for(job["id"], "REVOKED")
    emit(
        {
            "benchmark": "sse_latency",
            "what": "POST answered (change committed) -> status event received on /api/v2/events/",
            "streams_open": subscribers + 1,
            "hub_poll_seconds": 0.25,
            "run_to_pending_event_ms": summarize(run_ms),
            "cancel_to_canceling_event_ms": summarize(cancel_ms),
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
