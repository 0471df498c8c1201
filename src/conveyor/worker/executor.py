"""Running one claimed chunk: load items, process them in batches, write results back.

The same executor serves every dispatcher: a local worker process (``worker/process.py``)
claims the next queued chunk, a Celery task claims the chunk named in its message; both then
call ``run``. The claim already carries the job's state (and started the job), so a chunk
costs no extra look-up before its first batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conveyor import media, sealing
from conveyor.clock import utcnow
from conveyor.domain.artifacts import Artifact, ArtifactKind
from conveyor.domain.status import RUNNABLE, TERMINAL, ChunkKind, JobStatus
from conveyor.domain.work import Claim, ItemInput, ItemOutcome, JobContext, LogLine
from conveyor.errors import ConveyorError
from conveyor.inputs.collect import Collector
from conveyor.inputs.s3 import S3Credentials
from conveyor.pipelines import export, imaging, remote
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline
from conveyor.pipelines.export import DataExport
from conveyor.pipelines.registry import WarmPipelines
from conveyor.pipelines.remote import RemotePipeline
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.outputs import ShardWritten
from conveyor.worker.chunk_leases import ChunkLeases
from conveyor.worker.collecting import collect_pages
from conveyor.worker.fetching import Fetched, Fetcher, Loader, Prefetch, store_fetcher
from conveyor.worker.presence import Presence
from conveyor.worker.shards import ShardWriter

log = logging.getLogger(__name__)

#: The server secret that per-job credentials (``jobs.secret``) are sealed under.


class StopReason(StrEnum):
    NONE = ""
    CANCELED = "canceled"  # the job is CANCELING or finished: drop the chunk
    LEASE_LOST = "lease lost"  # another worker owns the chunk now: write nothing more
    SHUTDOWN = "shutdown"  # this worker is stopping: give the chunk back to the queue
    DEADLINE = "deadline"  # the job's timeout passed


@dataclass
class ChunkReport:
    chunk_id: int
    job_id: int
    processed: int
    stop: StopReason
    unblocked: list[int]


class _Watch:
    """Renews the lease in a background thread and turns job state into a stop reason."""

    def __init__(
        self, chunks: ChunkLeases, claim: Claim, settings: Settings, shutdown: threading.Event
    ) -> None:
        self.chunks = chunks
        self.claim = claim
        self.settings = settings
        self.shutdown = shutdown
        self.reason = StopReason.NONE
        self.delay_progress: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{claim.chunk_id}", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def should_stop(self) -> bool:
        if self.reason is StopReason.NONE and self.shutdown.is_set():
            self.reason = StopReason.SHUTDOWN
        return self.reason is not StopReason.NONE

    def observe(self, job: JobContext | None) -> None:
        if job is None:
            self.reason = StopReason.LEASE_LOST
        elif job.status not in RUNNABLE:
            self.reason = StopReason.CANCELED
        elif job.deadline_at is not None and utcnow() >= job.deadline_at:
            self.reason = StopReason.DEADLINE

    def _loop(self) -> None:
        period = self.settings.resolved_heartbeat_seconds
        while not self._done.wait(period):
            try:
                job = self.chunks.heartbeat(
                    self.claim, self.settings.lease_seconds, delay_progress=self.delay_progress
                )
            except Exception:  # a transient database error: the lease has slack, try again next period
                log.exception("heartbeat of chunk %s failed", self.claim.chunk_id)
                continue
            self.observe(job)


def _failure_warning(batch: list[ItemInput], outcomes: list[ItemOutcome]) -> LogLine | None:
    failures = [(item.name, o.error) for item, o in zip(batch, outcomes, strict=True) if not o.ok]
    if not failures:
        return None
    shown = "; ".join(f"{name}: {error}" for name, error in failures[:3])
    more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
    return LogLine("WARNING", f"{len(failures)} item(s) failed: {shown}{more}")


def _artifacts(pipeline: Pipeline, item: ItemInput, result: ItemResult) -> tuple[Artifact, ...]:
    """The pipeline's artifacts, plus a sample thumbnail of each image input of an image classifier
    (unless the pipeline made its own from the picture it had already decoded)."""
    if not pipeline.image_classification_model or item.kind == "text":
        return result.artifacts
    if any(a.kind is ArtifactKind.SAMPLE for a in result.artifacts):
        return result.artifacts
    made = imaging.sample_from_bytes(item.data)
    return (*result.artifacts, made) if made is not None else result.artifacts


class ChunkExecutor:
    """Runs chunks leased from the database (``store``: local and Celery workers) or, with no
    store, through ``chunks`` and ``fetcher`` alone (an HTTP worker, ``worker/http_worker.py``:
    item chunks of local pipelines only; the server writes their output shards)."""

    def __init__(
        self,
        store: Store | None,
        settings: Settings,
        *,
        worker_name: str,
        shutdown: threading.Event | None = None,
        warm: WarmPipelines | None = None,
        on_queued: Callable[[list[int]], object] | None = None,
        fetcher: Fetcher | None = None,
        chunks: ChunkLeases | None = None,
        presence: Presence | None = None,
    ) -> None:
        """``presence``: where this worker reports itself to the worker registry (None: nowhere)."""
        self.store = store
        if chunks is None:
            if store is None:
                raise ValueError("a ChunkExecutor needs a store or chunk leases")
            chunks = store.chunks
        if fetcher is None:
            if store is None:
                raise ValueError("a ChunkExecutor without a store needs a fetcher")
            fetcher = store_fetcher(store, settings)
        self.chunks: ChunkLeases = chunks
        self.settings = settings
        self.worker_name = worker_name
        self.shutdown = shutdown or threading.Event()
        self.warm = warm or WarmPipelines(
            settings.data_dir, capacity=settings.warm_models, device=settings.device
        )
        self._started_jobs: set[int] = set()
        self._remote: dict[str, RemotePipeline] = {}
        #: Told the ids of item chunks a collect stage queued (local: wake the pool; Celery: publish).
        self.on_queued: Callable[[list[int]], object] = on_queued or (lambda chunk_ids: None)
        self._shards = ShardWriter(store, settings) if store is not None else None
        self.fetcher = fetcher
        self.presence = presence

    def _server_store(self, what: str) -> Store:
        """The database, for what only server-side workers do (HTTP workers are never sent it)."""
        if self.store is None:
            raise ConveyorError(f"{what} runs on the server's own workers only")
        return self.store

    def _pipeline(self, slug: str) -> tuple[Pipeline, float | None]:
        """The warm pipeline for ``slug`` (and its load time if loaded now). A remote pipeline is
        looked up each chunk, so a re-registered service's new URL takes effect at once."""
        if slug == export.SLUG:
            return DataExport(self.settings.data_dir, self._server_store("a data export").jobs), None
        if not remote.is_remote(slug):
            return self.warm.get(slug)
        cls, endpoint = self._remote_endpoint(slug)
        cached = self._remote.get(slug)
        if cached is not None and type(cached).version == cls.version and cached.endpoint == endpoint:
            return cached, None
        if cached is not None:
            cached.close()
        self._remote[slug] = cls(endpoint, self.settings)
        return self._remote[slug], None

    def _remote_endpoint(self, slug: str) -> tuple[type[RemotePipeline], remote.Endpoint]:
        """The class and endpoint a chunk of ``slug`` runs with (UnknownPipeline if it cannot)."""
        store = self._server_store(f"remote pipeline {slug}")
        cls, service = remote.resolve(slug, store.processing_services.by_name)
        endpoint = remote.Endpoint(
            url=service["endpoint_url"],
            media_base_url=self.settings.media_base_url or self.settings.public_url,
            media_secret=store.processing_services.secret(media.SECRET_NAME),
        )
        return cls, endpoint

    def claim_and_run(self, *, chunk_id: int | None = None) -> ChunkReport | None:
        claim = self.chunks.claim(self.worker_name, self.settings.lease_seconds, chunk_id=chunk_id)
        if claim is None:
            return None
        return self.run(claim)

    def run(self, claim: Claim) -> ChunkReport:
        if self.presence is None:
            return self._run(claim)
        self.presence.working(claim.job_id)
        report = self._run(claim)
        # Only item chunks count: a collect chunk's count is of the inputs it listed.
        self.presence.done(claim.job_id, report.processed if claim.kind is ChunkKind.ITEMS else 0)
        return report

    def _run(self, claim: Claim) -> ChunkReport:
        job = claim.job if claim.job is not None else self.chunks.job_context(claim.job_id)
        with _Watch(self.chunks, claim, self.settings, self.shutdown) as watch:
            watch.observe(job)
            if job is None or watch.should_stop():
                return self._release(claim, watch, 0, [])
            if claim.kind is ChunkKind.DELAY:
                return self._run_delay(claim, job, watch)
            if claim.kind is ChunkKind.COLLECT:
                return self._run_collect(claim, job, watch)
            return self._run_items(claim, job, watch)

    # ------------------------------------------------------------- the delay stage
    def _run_delay(self, claim: Claim, job: JobContext, watch: _Watch) -> ChunkReport:
        started = time.monotonic()
        while not watch.should_stop():
            elapsed = time.monotonic() - started
            watch.delay_progress = min(1.0, elapsed / job.delay) if job.delay else 1.0
            if elapsed >= job.delay:
                unblocked = self.chunks.finish_delay(claim)
                return ChunkReport(claim.chunk_id, claim.job_id, 0, StopReason.NONE, unblocked)
            time.sleep(min(0.05, job.delay - elapsed))
        return self._release(claim, watch, 0, [])

    # ------------------------------------------------------------- the collect stage
    def _run_collect(self, claim: Claim, job: JobContext, watch: _Watch) -> ChunkReport:
        """List the job's S3 prefixes and manifests into items, a page per transaction; each
        page's chunk is announced at once, so its items run while listing goes on."""
        collecting = self._server_store("a collect stage").collecting
        plan = collecting.plan(claim.job_id)
        if plan is None or plan.get("done"):
            collecting.finish(claim, plan or {"done": True}, "Collect stage: nothing to list")
            return ChunkReport(claim.chunk_id, claim.job_id, 0, StopReason.NONE, [])
        listed_now = 0
        try:
            # An aws-s3 prefix lists with the job's own credentials.
            collector = Collector(self.settings, credentials=self._job_credentials(job))
            for rows, done in collect_pages(collector, plan, self.settings):
                if watch.should_stop():
                    return self._release(claim, watch, 0, [])
                appended = collecting.append(claim, rows, plan, lease_seconds=self.settings.lease_seconds)
                if not appended.held:
                    return ChunkReport(claim.chunk_id, claim.job_id, 0, StopReason.LEASE_LOST, [])
                if appended.job_status not in RUNNABLE:
                    return self._release(claim, watch, 0, [])
                listed_now += len(rows)
                if appended.chunk_ids:
                    self.on_queued(appended.chunk_ids)
                if done:
                    break
        except ConveyorError as exc:
            collecting.fail(claim, plan, exc.message)
            return ChunkReport(claim.chunk_id, claim.job_id, 0, StopReason.NONE, [])
        except Exception as exc:  # a stream broken mid-read: the job fails with the reason, never hangs
            log.exception("collect stage of job %s failed", claim.job_id)
            collecting.fail(claim, plan, f"{type(exc).__name__}: {exc}")
            return ChunkReport(claim.chunk_id, claim.job_id, 0, StopReason.NONE, [])
        message = (
            f"Collect stage listed {plan['listed']} input(s) from {len(plan['sources'])} source(s); "
            f"{plan['bytes']} bytes declared"
        )
        collecting.finish(claim, plan, message)
        return ChunkReport(claim.chunk_id, claim.job_id, listed_now, StopReason.NONE, [])

    # ------------------------------------------------------------- item chunks
    def _run_items(self, claim: Claim, job: JobContext, watch: _Watch) -> ChunkReport:
        items = self.chunks.pending_items(claim)
        logs: list[LogLine] = []
        stage_params: dict[str, list[dict[str, Any]]] | None = None
        assert job.pipeline_slug is not None
        try:
            pipeline, load_seconds = self._pipeline(job.pipeline_slug)
        except Exception as exc:  # a broken model fails its items with the reason, not the worker
            log.exception("loading pipeline %s failed", job.pipeline_slug)
            now = utcnow()
            failed = [
                ItemOutcome(
                    i.id, False, error=f"pipeline failed to load: {exc}", started_at=now, finished_at=now
                )
                for i in items
            ]
            logs.append(LogLine("ERROR", f"Pipeline {job.pipeline_slug} failed to load: {exc}"))
            wrote = self.chunks.write_back(
                claim,
                failed,
                logs,
                lease_seconds=self.settings.lease_seconds,
                complete=True,
                shards=self._output_shards(claim, job, failed, logs),
            )
            return ChunkReport(
                claim.chunk_id,
                claim.job_id,
                len(failed) if wrote.held else 0,
                StopReason.NONE if wrote.held else StopReason.LEASE_LOST,
                [],
            )
        if claim.job_id not in self._started_jobs:
            self._started_jobs.add(claim.job_id)
            # A model kept warm from an earlier job reports the load time it once took.
            seconds = load_seconds if load_seconds is not None else self.warm.load_seconds.get(pipeline.slug)
            load_ms = round((seconds or 0.0) * 1000)
            how = "loaded in" if load_seconds is not None else "already warm; it loaded in"
            device = "" if pipeline.device is None else f"on {pipeline.device} "
            where = (
                f"on processing service {pipeline.endpoint.url}"
                if isinstance(pipeline, RemotePipeline)
                else f"{device}(model {how} {load_ms} ms)"
            )
            logs.append(
                LogLine("INFO", f"Worker {self.worker_name} runs {pipeline.slug} v{pipeline.version} {where}")
            )
            stage_params = {
                pipeline.stages[0].key: [
                    {"name": "model_load_ms", "value": load_ms},
                    {"name": "model_warm", "value": load_seconds is None},
                    {"name": "worker", "value": self.worker_name},
                ]
            }
            if pipeline.device is not None:  # a torch model: where it runs (CONVEYOR_DEVICE, resolved)
                stage_params[pipeline.stages[0].key].append({"name": "device", "value": pipeline.device})
        ctx = BatchContext(
            config=job.config,
            explain=job.explain,
            data_dir=self.settings.data_dir,
            should_stop=watch.should_stop,
        )
        batch_size = pipeline.effective_batch_size(job.config)
        buffer: list[ItemOutcome] = []
        last_flush = time.monotonic()
        processed = 0
        position = 0
        # Items by reference are fetched ahead of the model; a chunk of inline items skips that.
        prefetch = self._prefetch(job, items, batch_size, watch) if any(i.ref for i in items) else None
        while position < len(items) and not watch.should_stop():
            if prefetch is None:
                batch = items[position : position + batch_size]
                outcomes = self._process(pipeline, batch, ctx)
            else:
                fetched = prefetch.take(batch_size)
                if fetched is None:  # stopping while fetching: the chunk goes back as it is
                    break
                batch = [f.item for f in fetched]
                outcomes = self._process_fetched(pipeline, fetched, ctx)
            if outcomes is None:  # the batch was interrupted by a stop: nothing of it is kept
                break
            buffer.extend(outcomes)
            logs.extend(LogLine(level, message) for level, message in ctx.logs)
            warning = _failure_warning(batch, outcomes)
            if warning is not None:
                logs.append(warning)
            position += len(batch)
            last_chunk_batch = position >= len(items)
            if last_chunk_batch or time.monotonic() - last_flush >= self.settings.flush_seconds:
                wrote = self.chunks.write_back(
                    claim,
                    buffer,
                    logs,
                    lease_seconds=self.settings.lease_seconds,
                    complete=last_chunk_batch,
                    stage_params=stage_params,
                    shards=self._output_shards(claim, job, buffer, logs, watch) if last_chunk_batch else (),
                )
                if not wrote.held:
                    watch.reason = StopReason.LEASE_LOST
                    return ChunkReport(claim.chunk_id, claim.job_id, processed, watch.reason, [])
                processed += len(buffer)
                buffer, logs, stage_params = [], [], None
                last_flush = time.monotonic()
                if wrote.job_status in TERMINAL or wrote.job_status == JobStatus.CANCELING:
                    watch.reason = StopReason.CANCELED if not last_chunk_batch else StopReason.NONE
                if last_chunk_batch:
                    return ChunkReport(claim.chunk_id, claim.job_id, processed, StopReason.NONE, [])
        if not items:  # a redelivered chunk whose items were all written before (or none readable)
            wrote = self.chunks.write_back(
                claim,
                buffer,
                logs,
                lease_seconds=self.settings.lease_seconds,
                complete=True,
                stage_params=stage_params,
                shards=self._output_shards(claim, job, [], logs),
            )
            done = len(buffer) if wrote.held else 0
            return ChunkReport(claim.chunk_id, claim.job_id, done, StopReason.NONE, [])
        return self._release(claim, watch, processed, buffer, logs)

    def _output_shards(
        self,
        claim: Claim,
        job: JobContext,
        outcomes: list[ItemOutcome],
        logs: list[LogLine],
        watch: _Watch | None = None,
    ) -> list[ShardWritten]:
        """A job with an output: write the chunk's shard before its final write-back records it
        (worker/shards.py); a sink failure adds an ERROR line to ``logs``. Not when the job is
        stopping: the sweeper writes what is missing once the job has ended."""
        if not job.output or self._shards is None or (watch is not None and watch.should_stop()):
            return []
        shards, problems = self._shards.write(claim, job, outcomes)
        logs.extend(problems)
        return shards

    def _prefetch(self, job: JobContext, items: list[ItemInput], batch_size: int, watch: _Watch) -> Prefetch:
        """The chunk's items with their refs fetched ahead of the model. Its threads stop when the
        watch says stop (every early return of ``_run_items`` sets a stop reason first)."""
        concurrency = self.settings.fetch_concurrency
        return Prefetch(
            self._loader(job, items),
            items,
            concurrency=concurrency,
            window=concurrency + batch_size,
            should_stop=watch.should_stop,
        )

    def _job_credentials(self, job: JobContext) -> S3Credentials | None:
        """The job's own S3 credentials (sealed at submit), or None when it has none."""
        if not job.secret or self.store is None:
            return None
        try:
            secret = self.store.processing_services.secret(sealing.CREDENTIALS_SECRET)
            return S3Credentials.from_dict(sealing.unseal(secret, job.secret))
        except (ConveyorError, KeyError) as exc:
            log.error("job %s: its S3 credentials cannot be read: %s", job.job_id, exc)
            raise ConveyorError(f"the job's S3 credentials cannot be read ({exc})") from None

    def _loader(self, job: JobContext, items: list[ItemInput]) -> Loader:
        """How the prefetch reads an item: with the job's own S3 credentials when it has some."""
        credentials: S3Credentials | None = None
        sealed_error: ConveyorError | None = None
        if any(i.ref is not None and i.ref.startswith("s3://") for i in items):
            try:
                credentials = self._job_credentials(job)
            except ConveyorError as exc:
                sealed_error = exc

        def load(item: ItemInput, stopping: Callable[[], bool]) -> bytes:
            if sealed_error is not None and item.ref is not None and item.ref.startswith("s3://"):
                raise sealed_error
            return self.fetcher.fetch_item(item, credentials=credentials, stop=stopping)

        return load

    def _process_fetched(
        self, pipeline: Pipeline, fetched: list[Fetched], ctx: BatchContext
    ) -> list[ItemOutcome] | None:
        """Run the fetched items of a batch; those whose fetch failed become failed outcomes. The
        outcomes are in the batch's order, with the bytes read for each item fetched from its
        reference (None if stopping)."""
        ready = [f.item for f in fetched if f.error is None]
        ctx.logs.clear()  # also when no item is left to run: no logs of the batch before
        ran = self._process(pipeline, ready, ctx) if ready else []
        if ran is None:
            return None
        by_id = {o.id: o for o in ran}
        outcomes: list[ItemOutcome] = []
        for f in fetched:
            if f.error is not None:
                outcomes.append(
                    ItemOutcome(
                        f.item.id, False, error=f.error, started_at=f.started_at, finished_at=f.finished_at
                    )
                )
                continue
            outcome = by_id[f.item.id]
            if self.fetcher.counts_input_bytes(f.item):
                # Read from a URL or S3: counted now (bytes stored by Conveyor were counted at submit).
                outcome.byte_size = len(f.item.data)
            outcomes.append(outcome)
        return outcomes

    def _process(
        self, pipeline: Pipeline, batch: list[ItemInput], ctx: BatchContext
    ) -> list[ItemOutcome] | None:
        """Run one batch. A batch that raises fails all its items with the error (None if stopping)."""
        started = utcnow()
        ctx.logs.clear()
        try:
            results = pipeline.process_batch(batch, ctx)
            if len(results) != len(batch):
                raise RuntimeError(f"pipeline returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            if ctx.should_stop():
                return None
            log.exception("a batch of %s failed", pipeline.slug)
            finished = utcnow()
            error = f"{type(exc).__name__}: {exc}"
            return [
                ItemOutcome(i.id, False, error=error, started_at=started, finished_at=finished) for i in batch
            ]
        finished = utcnow()
        return [
            ItemOutcome(item.id, r.ok, r.value, r.error, started, finished, _artifacts(pipeline, item, r))
            for item, r in zip(batch, results, strict=True)
        ]

    def _release(
        self,
        claim: Claim,
        watch: _Watch,
        processed: int,
        buffer: list[ItemOutcome],
        logs: list[LogLine] | None = None,
    ) -> ChunkReport:
        """Stop early: keep what finished (unless the lease is gone), then give the chunk back."""
        reason = watch.reason if watch.reason is not StopReason.NONE else StopReason.SHUTDOWN
        if reason is StopReason.LEASE_LOST:
            return ChunkReport(claim.chunk_id, claim.job_id, processed, reason, [])
        if buffer or logs:
            wrote = self.chunks.write_back(
                claim, buffer, logs or [], lease_seconds=self.settings.lease_seconds, complete=False
            )
            if wrote.held:
                processed += len(buffer)
        if reason is StopReason.DEADLINE and self.store is not None:
            self.store.sweeping.time_out_jobs()  # (an HTTP worker's server does this on its own)
        self.chunks.release(claim, requeue=reason is StopReason.SHUTDOWN)
        return ChunkReport(claim.chunk_id, claim.job_id, processed, reason, [])
