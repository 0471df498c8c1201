"""What the contract suite talks to: one running deployment of a backend combination.

``tests/contract/conftest.py`` starts one per combination (SQLite or PostgreSQL, local
workers or Celery); the contract tests use only this interface, so the same test functions
run against each of them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from tests.helpers import Server, text_inputs, wait_for
from tests.helpers.backends import chunk_rows, item_rows
from tests.helpers.celery import CeleryWorker


@dataclass
class Deployment:
    """A running deployment: its API, its own database and, in Celery mode, its worker."""

    name: str
    server: Server
    engine: sa.Engine
    prefix: str  # every job of the module is named with it, so history queries can be narrowed
    worker: CeleryWorker | None = None
    job_ids: list[int] = field(default_factory=list)

    @property
    def celery(self) -> bool:
        return self.worker is not None

    def client(self) -> httpx.Client:
        return self.server.client()

    def submit(self, n: int, *, name: str, start_now: bool = True, **body: Any) -> dict[str, Any]:
        """Submit a ``test-delay`` job of ``n`` text inputs named ``<prefix>-<name>``; the 201 body."""
        payload: dict[str, Any] = {
            "name": f"{self.prefix}-{name}",
            "pipeline": "test-delay",
            "inputs": text_inputs(n),
            **body,
        }
        with self.client() as client:
            response = client.post("/api/v2/jobs/" + ("?start_now=true" if start_now else ""), json=payload)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        self.job_ids.append(job["id"])
        return job

    def items(self, job_id: int) -> list[tuple[int, str, int]]:
        """(seq, status, attempts) from the deployment's database: the ground truth for the counters."""
        return item_rows(self.engine, job_id)

    def chunks(self, job_id: int) -> list[tuple[int, str, str, int, str | None]]:
        """(id, kind, status, attempts, leased_by) of the job's chunks."""
        return chunk_rows(self.engine, job_id)

    def worker_pids(self) -> list[int]:
        """Pids of the processes that run chunks: the local pool's workers or the Celery pool's children."""
        if self.worker is not None:
            return self.worker.children()
        with self.client() as client:
            return [w["pid"] for w in client.get("/api/v2/workers/pool/").json() if w["alive"] and w["pid"]]

    @staticmethod
    def leaseholder_pid(leased_by: str | None) -> int | None:
        """The pid in ``chunks.leased_by``: ``host:pid:slot`` (local pool) or ``celery:host:pid``."""
        if not leased_by:
            return None
        parts = leased_by.split(":")
        raw = parts[-1] if parts[0] == "celery" else parts[-2]
        return int(raw) if raw.isdigit() else None

    def kill_a_worker_holding_a_chunk(self, job_id: int, timeout: float = 30) -> tuple[int, int]:
        """SIGKILL a worker process that holds a lease on one of the job's chunks; (chunk id, pid)."""

        def held() -> tuple[int, int] | None:
            pids = set(self.worker_pids())
            for chunk_id, kind, status, _, leased_by in self.chunks(job_id):
                pid = self.leaseholder_pid(leased_by)
                if kind == "items" and status == "LEASED" and pid in pids:
                    return chunk_id, pid
            return None

        chunk_id, pid = wait_for(
            held, timeout, interval=0.02, what=f"a worker holding a chunk of job {job_id}"
        )
        os.kill(pid, signal.SIGKILL)
        return chunk_id, pid
