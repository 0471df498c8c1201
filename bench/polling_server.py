"""``conveyor`` with wake-up notifications switched off: the polling baseline for submit_latency.py.

The local dispatcher normally wakes idle workers the moment chunks are queued. Here its
``enqueue`` does nothing, so an idle worker only finds new work when its idle wait
(``conveyor.worker.process.IDLE_POLL_SECONDS``, 1 s) runs out: exactly a worker that polls.
Everything else is the real server. Used as ``python bench/polling_server.py serve --port …``.
"""

from __future__ import annotations

from conveyor.dispatch.local import LocalDispatcher


def _no_wake(self: LocalDispatcher, chunk_ids: list[int]) -> None:
    return None


# Patched at import, so it also holds in the spawned worker processes (they re-import this module).
LocalDispatcher.enqueue = _no_wake  # type: ignore[method-assign]

if __name__ == "__main__":
    from conveyor.cli import app

    app(prog_name="conveyor")
