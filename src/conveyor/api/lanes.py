"""Submits run in a thread pool of their own.

FastAPI runs a plain ``def`` route in anyio's default thread pool: 40 threads, first come first
served. Under a flood of status polls (issue 17's 200 pollers on 2 shared cores) the reads queue
there, and a submit waited behind every one of them: seconds for a POST that takes 20 ms idle.
A submit takes a lane of its own, so it waits only for other submits (and for the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from fastapi import Request

SUBMIT_THREADS = 4  # submits at once; more wait for one of these, never behind the reads
T = TypeVar("T")


async def run_submit(request: Request, work: Callable[[], T]) -> T:
    """``work()`` (blocking) in the submit lane's threads."""
    limiter = getattr(request.app.state, "submit_lane", None)
    if limiter is None:  # created on the event loop, on first use (no await in between)
        limiter = request.app.state.submit_lane = anyio.CapacityLimiter(SUBMIT_THREADS)
    return await anyio.to_thread.run_sync(work, limiter=limiter)
