"""Workers as the registry sees them: their kinds and the state a row's timestamps mean.

A worker reports itself (``store/workers.py``); nobody tells the registry that a worker died, so
"lost" is inferred: a worker silent for longer than a lease of its kind has, by then, lost its
lease too, and its work went back to the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum


class WorkerKind(StrEnum):
    LOCAL = "local"  # a process of a server's own pool (``conveyor serve --workers N``)
    CELERY = "celery"  # a pool process of ``conveyor worker`` (Celery)
    HTTP = "http"  # ``conveyor worker --server URL``, leasing over HTTP with a worker key
    PULL = "pull"  # an Antenna ADC worker speaking the async_api pull protocol


class WorkerState(StrEnum):
    ACTIVE = "active"  # working on a job
    IDLE = "idle"  # alive, waiting for work
    LOST = "lost"  # silent for longer than a lease: killed, partitioned or hung
    STOPPED = "stopped"  # said goodbye (a clean exit)


#: The deployment's own workers: they serve every account, so every account sees them.
DEPLOYMENT_KINDS: frozenset[WorkerKind] = frozenset({WorkerKind.LOCAL, WorkerKind.CELERY})


def worker_state(
    *,
    stopped_at: datetime | None,
    last_seen_at: datetime,
    current_job_id: int | None,
    now: datetime,
    lost_after_seconds: float,
) -> WorkerState:
    """The state of one worker row at ``now``. A stop wins over silence (a stopped worker is not
    lost), silence over the job it last reported (a lost worker's job went back to the queue)."""
    if stopped_at is not None:
        return WorkerState.STOPPED
    if now - last_seen_at > timedelta(seconds=lost_after_seconds):
        return WorkerState.LOST
    return WorkerState.ACTIVE if current_job_id is not None else WorkerState.IDLE


def lost_after(kind: str, lost_after_seconds: Mapping[str, float]) -> float:
    """The silence after which a worker of ``kind`` counts as lost (its lease's length)."""
    return lost_after_seconds.get(kind, max(lost_after_seconds.values(), default=30.0))
