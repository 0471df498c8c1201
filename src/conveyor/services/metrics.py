"""Prometheus figures: read from the shared database at scrape time, plus this process's own.

Job, item, queue and chunk figures come from the store, so any API process reports the whole
deployment's state alike in embedded and distributed mode (scrape one API process, or aggregate
with ``max``, not ``sum``). The chunk latency histogram observes, at each scrape, the chunks that
finished since the previous one (from their queued time to done), starting when the process starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.clock import utcnow
from conveyor.domain.status import JobStatus
from conveyor.services.events import EventHub
from conveyor.store import Store

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# A chunk's finished_at comes from the writer's clock and commits a moment later: look back this far.
LOOKBACK = timedelta(seconds=10)


class ConveyorCollector(Collector):
    def __init__(
        self, store: Store, hub: EventHub, local_workers: Callable[[], list[dict[str, object]]]
    ) -> None:
        self.store = store
        self.hub = hub
        self.local_workers = local_workers
        self.chunk_latency = Histogram(
            "conveyor_chunk_latency_seconds",
            "Chunks finished since this process started: seconds from queued to done, by pipeline.",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._lock = threading.Lock()
        self._checked = utcnow()
        self._seen: dict[int, datetime] = {}

    def _observe_finished_chunks(self) -> None:
        with self._lock:
            now = utcnow()
            since = self._checked - LOOKBACK
            for chunk in self.store.stats.chunks_finished_since(since):
                if chunk.id not in self._seen:
                    self._seen[chunk.id] = now
                    self.chunk_latency.labels(chunk.pipeline).observe(chunk.seconds)
            self._checked = now
            self._seen = {i: t for i, t in self._seen.items() if t >= now - 2 * LOOKBACK}

    def collect(self) -> Iterator[Metric]:
        self._observe_finished_chunks()
        by_status = self.store.stats.jobs_by_status()
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs in the history by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs

        items = self.store.stats.items_by_pipeline()
        processed = GaugeMetricFamily(
            "conveyor_items_processed",
            "Items processed successfully, over the jobs in the history.",
            labels=["pipeline"],
        )
        failed = GaugeMetricFamily(
            "conveyor_items_failed", "Items that failed, over the jobs in the history.", labels=["pipeline"]
        )
        for slug, (done, bad) in sorted(items.items()):
            processed.add_metric([slug], done)
            failed.add_metric([slug], bad)
        yield processed
        yield failed

        chunks = self.store.stats.chunks_by_state()
        yield GaugeMetricFamily(
            "conveyor_queue_depth",
            "Chunks queued and waiting for a worker (pending chunks).",
            value=chunks["QUEUED"],
        )
        open_chunks = GaugeMetricFamily(
            "conveyor_chunks_open", "Unfinished chunks by state.", labels=["state"]
        )
        for state, count in chunks.items():
            open_chunks.add_metric([state.lower()], count)
        yield open_chunks

        workers = self.local_workers()
        local = GaugeMetricFamily(
            "conveyor_workers", "Local worker processes of this server by state.", labels=["state"]
        )
        local.add_metric(["alive"], sum(1 for w in workers if w.get("alive")))
        local.add_metric(["ready"], sum(1 for w in workers if w.get("alive") and w.get("ready")))
        yield local
        yield GaugeMetricFamily(
            "conveyor_workers_busy",
            "Distinct workers (local or Celery, any host) holding a chunk lease right now.",
            value=self.store.stats.busy_workers(),
        )
        yield from self.chunk_latency.collect()

        yield GaugeMetricFamily(
            "conveyor_event_streams",
            "Open live event streams (SSE) on this process.",
            value=len(self.hub.subscriptions),
        )
        polls = CounterMetricFamily(
            "conveyor_event_hub_polls", "Change-feed reads by this process's event hub."
        )
        polls.add_metric([], self.hub.polls)
        yield polls


def make_registry(collector: ConveyorCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
