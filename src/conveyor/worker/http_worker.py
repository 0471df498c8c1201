"""``conveyor worker --server URL``: a worker that needs nothing but HTTP(S) to the API.

N threads of one process each lease an item chunk (``worker/lease_client.py``), run it with
the same ``ChunkExecutor`` as local workers, sharing the process's warm models (like the model
threads of a local worker), and lease the next. No database, no broker: its data directory
holds only models and temporary files.

SIGTERM or Ctrl-C: each thread finishes (or stops) its batch, posts what is done, hands the
rest of its chunk back to the queue, and the process exits 0. ``kill -9``: its leases run out
(``CONVEYOR_LEASE_SECONDS`` on the server) and the sweeper re-queues them; the next worker gets
only the items not written back. A key the server refuses (401 unknown/revoked, 403 not allowed
to lease) stops every thread: one line on stderr, exit status 3.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.pipelines import export, registry, torch_runtime
from conveyor.pipelines.registry import WarmPipelines
from conveyor.settings import Settings
from conveyor.worker.executor import ChunkExecutor
from conveyor.worker.lease_client import LeaseClient, LeaseError, LeaseRefused, MediaFetcher
from conveyor.worker.pool import model_threads

log = logging.getLogger(__name__)

#: How long an idle thread waits before asking for work again.
IDLE_POLL_SECONDS = 0.5
EXIT_USAGE = 2
EXIT_REFUSED = 3


@dataclass
class _State:
    shutdown: threading.Event = field(default_factory=threading.Event)
    refused: list[str] = field(default_factory=list)


def default_name() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


def run(
    server_url: str,
    key: str,
    *,
    settings: Settings,
    pipelines: Sequence[str] = (),
    concurrency: int = 1,
    name: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (0) or until the server refuses the key (3)."""
    installed = [s for s in registry.available() if s != export.SLUG]
    missing = [s for s in pipelines if s not in installed]
    if missing:
        print(
            f"error: pipeline(s) not installed here: {', '.join(missing)} "
            f"(installed: {', '.join(installed)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    slugs = list(dict.fromkeys(pipelines)) or installed
    name = name or default_name()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per lease and heartbeat
    client = LeaseClient(
        server_url, key, pipelines=slugs, host=os.uname().nodename, connections=2 * concurrency + 2
    )
    try:
        terms = client.terms()
    except LeaseRefused as exc:
        print(f"error: the server refused this worker's key: {exc}", file=sys.stderr)
        client.close()
        return EXIT_REFUSED
    except LeaseError as exc:
        print(f"error: cannot reach {server_url}: {exc}", file=sys.stderr)
        client.close()
        return 1
    settings = settings.model_copy(
        update={
            "lease_seconds": terms.lease_seconds,
            "heartbeat_seconds": terms.heartbeat_seconds,
            "flush_seconds": terms.flush_seconds,
        }
    )
    settings.ensure_data_dir()
    torch_runtime.use_model_threads(model_threads(settings, concurrency))
    state = _State()
    client.stopping = state.shutdown.is_set

    def on_signal(*_: object) -> None:
        state.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    warm = WarmPipelines(settings.data_dir, capacity=settings.warm_models)
    fetcher = MediaFetcher(settings, client)
    threads = [
        threading.Thread(
            target=_loop,
            args=(
                ChunkExecutor(
                    None,
                    settings,
                    worker_name=name if concurrency == 1 else f"{name}/{n}",
                    shutdown=state.shutdown,
                    warm=warm,
                    fetcher=fetcher,
                    chunks=client,
                ),
                state,
            ),
            name=f"http-worker-{n}",
        )
        for n in range(max(1, concurrency))
    ]
    log.info(
        "HTTP worker %s ready: %s, %d thread(s), pipelines %s",
        name,
        server_url,
        len(threads),
        ", ".join(slugs),
    )
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.2)
    finally:
        client.close()
    if state.refused:
        print(f"error: the server refused this worker's key: {state.refused[0]}", file=sys.stderr)
        return EXIT_REFUSED
    log.info("HTTP worker %s stopped", name)
    return 0


def _loop(executor: ChunkExecutor, state: _State) -> None:
    while not state.shutdown.is_set():
        try:
            report = executor.claim_and_run()
        except LeaseRefused as exc:
            state.refused.append(str(exc))
            state.shutdown.set()
            return
        except Exception:
            log.exception("%s: lease or run failed; retrying", executor.worker_name)
            state.shutdown.wait(1.0)
            continue
        if report is None:
            state.shutdown.wait(IDLE_POLL_SECONDS)
