"""Job use cases shared by the API, the CLI (through the API) and tests: submit, export, run,
cancel, retry, delete, and the reads.

Building a job from a request (pipeline, project, inputs, item rows) is services/submission.py;
this module writes what it built in one transaction and hands the chunks to the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import RowMapping

from conveyor import exports, sealing
from conveyor.dispatch.base import Dispatcher
from conveyor.domain.access import Principal, require_write, scope_of
from conveyor.domain.status import JobStatus
from conveyor.errors import Conflict, ConveyorError, InvalidInput, NotFound
from conveyor.inputs.resolve import InputResolver
from conveyor.inputs.s3 import S3Credentials
from conveyor.pipelines import export
from conveyor.pipelines.export import DataExport
from conveyor.services.collections import CollectionService
from conveyor.services.processing import ProcessingServices
from conveyor.services.pull import PullService
from conveyor.services.quotas import Quotas
from conveyor.services.submission import (
    JOB_TYPE_EXPORT,
    JobRequest,
    PreparedJob,
    ResolvedPipeline,
    Submissions,
)
from conveyor.services.workers import Workers
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.history import HistoryPage, HistoryQuery
from conveyor.store.jobs import JobDetail, Queued
from conveyor.store.uploads import is_open
from conveyor.worker.fetching import store_fetcher

log = logging.getLogger(__name__)

MAX_EXPORT_JOBS = 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JobService:
    def __init__(self, store: Store, dispatcher: Dispatcher, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.quotas = Quotas(store, settings)
        self.resolver = InputResolver(settings)
        self.fetcher = store_fetcher(store, settings)  # the signed media URLs of items by reference
        self.collections = CollectionService(store, settings, self.resolver)
        self.processing = ProcessingServices(store, settings)
        self.workers = Workers(store)
        self.pull = PullService(store, settings)
        self.submissions = Submissions(
            store,
            settings,
            dispatch_mode=dispatcher.mode,
            resolver=self.resolver,
            collections=self.collections,
            processing=self.processing,
            quotas=self.quotas,
            pull=self.pull,
        )

    # ---------------------------------------------------------------- writes
    def submit(
        self, principal: Principal, request: JobRequest, *, start_now: bool, open_for_uploads: bool = False
    ) -> int:
        """Create a job with all its items. ``open_for_uploads``: create it without items, OPEN for
        chunked file inputs (services/uploads.py); closing it adds the items and queues it."""
        prepared = self.submissions.prepare(principal, request, open_for_uploads=open_for_uploads)
        return self._create(prepared, start=start_now and not open_for_uploads)

    def export(
        self,
        principal: Principal,
        job_ids: Sequence[int],
        fmt: exports.Format,
        *,
        name: str | None = None,
        project_id: int | None = None,
    ) -> int:
        """A ``data_export`` job writing the finished results of ``job_ids`` (jobs the caller may
        read) into one file, one item per source job; it runs on the workers like any job."""
        if not job_ids or len(job_ids) > MAX_EXPORT_JOBS or len(set(job_ids)) != len(job_ids):
            raise InvalidInput(f"An export takes 1 to {MAX_EXPORT_JOBS} different job ids.")
        if fmt not in exports.FORMATS:
            raise InvalidInput(f"Unknown export format {fmt!r}; use one of {', '.join(exports.FORMATS)}.")
        for job_id in job_ids:
            try:
                self.store.jobs.get(scope_of(principal), job_id)
            except NotFound:
                raise InvalidInput(f"Job {job_id} not found.", job_id=job_id) from None
        request = JobRequest(
            name=name or f"Export of job{'s' if len(job_ids) > 1 else ''} {', '.join(map(str, job_ids))}",
            pipeline=export.SLUG,
            inputs=[{"name": f"job-{j}", "kind": "text", "data": str(j)} for j in job_ids],
            config={"format": fmt},
            project_id=project_id,
        )
        pipeline = ResolvedPipeline(self.store.pipelines.latest(export.SLUG), DataExport)
        prepared = self.submissions.prepare(principal, request, pipeline=pipeline, job_type=JOB_TYPE_EXPORT)
        return self._create(prepared, start=True)

    def result_rows(self, principal: Principal, job_id: int) -> Iterator[dict[str, Any]]:
        """The export rows of a job's finished items (404 now, before any row is read, if the key
        cannot see the job)."""
        self.store.jobs.get(scope_of(principal), job_id)
        return (exports.row(job_id, item) for item in self.store.jobs.finished_items(job_id))

    def export_rows(
        self, principal: Principal, job_id: int
    ) -> tuple[exports.Format, Iterator[dict[str, Any]]]:
        """The format and rows of a finished data_export job (404 if not one, 409 if not done)."""
        job = self.store.jobs.get(scope_of(principal), job_id)
        if job["job_type"] != JOB_TYPE_EXPORT:
            raise NotFound(f"Job {job_id} is not a data export; its results are at /results/.", job_id=job_id)
        if job["status"] != JobStatus.SUCCESS:
            raise Conflict(
                f"Export job {job_id} is {job['status']}; its file can be downloaded once it has succeeded.",
                job_id=job_id,
            )
        return job["config"]["format"], export.read_parts(self.store.artifacts.export_parts(job_id))

    def _create(self, prepared: PreparedJob, *, start: bool) -> int:
        """The job and its items in one transaction, then its chunks to the dispatcher."""
        try:
            job_id, queued = self.store.jobs.create(prepared.job, prepared.items, start=start)
        except BaseException:
            self.submissions.discard_blobs(prepared.job.blob_prefix)
            raise
        self._dispatch(queued)
        return job_id

    def run(self, principal: Principal, job_id: int) -> None:
        job = self.require_write_on(principal, job_id)
        if is_open(job["input_summary"]):
            raise Conflict(f"Job {job_id} is waiting for file inputs; close it to queue it.")
        self._dispatch(self.store.jobs.run(scope_of(principal), job_id))
        self.audit(principal, "job.run", job)

    def cancel(self, principal: Principal, job_id: int) -> JobStatus:
        job = self.require_write_on(principal, job_id)
        status = self.store.jobs.cancel(scope_of(principal), job_id)
        self.dispatcher.revoke(job_id)
        self.audit(principal, "job.cancel", job)
        return status

    def retry(self, principal: Principal, job_id: int) -> None:
        job = self.require_write_on(principal, job_id)
        self._dispatch(self.store.jobs.retry(scope_of(principal), job_id))
        self.audit(principal, "job.retry", job)

    def delete(self, principal: Principal, job_id: int) -> None:
        """Delete the job's rows, then (once that committed) the blobs of its request's bytes."""
        job = self.require_write_on(principal, job_id)
        prefix = self.store.jobs.delete(scope_of(principal), job_id)
        self.audit(principal, "job.delete", job)
        if prefix:
            try:
                self.store.blobs.delete_prefix(prefix)
            except Exception:  # the job is gone; blobs left behind are only disk, logged
                log.exception("deleting the blobs of job %s under %s failed", job_id, prefix)

    def item_media(self, item_id: int) -> bytes | None:
        """An item's input bytes for a signed media URL (the caller checked the signature),
        wherever they are; None when the item or its bytes are gone."""
        found = self.store.jobs.item_data(item_id)
        if found is None:
            return None
        data, ref = found
        if data is not None or ref is None:
            return data
        try:  # the blob store, a collection item, or the URL / S3 object (the SSRF guard applies)
            return self.fetcher.fetch(ref, f"item {item_id}", credentials=self._credentials(item_id, ref))
        except ConveyorError:  # gone, refused or unreachable: the processing service gets a 404
            return None

    def _credentials(self, item_id: int, ref: str) -> S3Credentials | None:
        """An ``s3://`` item of a job with its own S3 credentials is read with them (an HTTP worker
        is sent such items as media URLs: it holds no credentials)."""
        if not ref.startswith("s3://"):
            return None
        sealed = self.store.jobs.item_job_secret(item_id)
        if not sealed:
            return None
        secret = self.store.processing_services.secret(sealing.CREDENTIALS_SECRET)
        try:
            return S3Credentials.from_dict(sealing.unseal(secret, sealed))
        except (ConveyorError, KeyError) as exc:
            log.error("item %s: its job's S3 credentials cannot be read: %s", item_id, exc)
            raise ConveyorError(f"the job's S3 credentials cannot be read ({exc})") from None

    def audit(self, principal: Principal, action: str, job: RowMapping) -> None:
        """Who did what to a job (its status changes are in job_events; this outlives a delete)."""
        self.store.audit.record(
            principal.account_id, principal.key_prefix, action, f"job:{job['uuid']}", job["project_id"]
        )

    def require_write_on(self, principal: Principal, job_id: int) -> RowMapping:
        """The job, if the key may act on it: 403 for a read-only key, 404 for a job it cannot see,
        403 when its role in the job's project is read-only."""
        require_write(principal)
        job = self.store.jobs.get(scope_of(principal), job_id)
        require_write(principal, job["project_id"])
        return job

    def _dispatch(self, queued: Queued | None) -> None:
        if queued is not None and queued.chunk_ids:
            self.dispatcher.enqueue(queued.chunk_ids)

    # ----------------------------------------------------------------- reads
    def get(self, principal: Principal, job_id: int) -> RowMapping:
        return self.store.jobs.get(scope_of(principal), job_id)

    def detail(
        self,
        principal: Principal,
        job_id: int | None = None,
        *,
        uuid: str | None = None,
        logs: bool = True,
        inputs: int = 0,
    ) -> JobDetail:
        """A job by id or by uuid, with its recent log lines (``logs``: as many as the native
        detail shows) and its first ``inputs`` items, in one read."""
        return self.store.jobs.detail(
            scope_of(principal),
            job_id,
            uuid=uuid,
            log_lines=self.settings.job_log_lines_in_detail if logs else 0,
            inputs=inputs,
        )

    def tag_by_uuid(self, principal: Principal, uuid: str) -> tuple[int, JobStatus]:
        """(row version, status) of a job the key can see, by uuid: Modzy's job ETag."""
        return self.store.jobs.tag_by_uuid(scope_of(principal), uuid)

    def tag(self, principal: Principal, job_id: int) -> tuple[str, int, int]:
        """(uuid, row version, newest log id) of a job the key can see: the inputs of its ETags."""
        return self.store.jobs.tag(scope_of(principal), job_id)

    def history(self, principal: Principal, query: HistoryQuery) -> HistoryPage:
        visible = principal.visible_projects()
        if query.project_id is not None and visible is not None and query.project_id not in visible:
            raise NotFound(f"Project {query.project_id} not found.")
        return self.store.history.page(scope_of(principal), query)

    def items(
        self, principal: Principal, job_id: int, *, statuses: Sequence[str] | None, after_seq: int, limit: int
    ) -> tuple[int, list[RowMapping]]:
        return self.store.jobs.items(
            scope_of(principal), job_id, statuses=statuses, after_seq=after_seq, limit=limit
        )

    def logs(
        self, principal: Principal, job_id: int, *, after: int, level: str | None, limit: int
    ) -> list[RowMapping]:
        levels = None
        if level:
            name = level.upper()
            if name not in LOG_LEVELS:
                raise InvalidInput(f"Unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}.")
            levels = LOG_LEVELS[LOG_LEVELS.index(name) :]
        return self.store.jobs.logs(scope_of(principal), job_id, after=after, levels=levels, limit=limit)

    def events(self, principal: Principal, job_id: int) -> list[RowMapping]:
        return self.store.jobs.events(scope_of(principal), job_id)

    def resolve_project(self, principal: Principal, project_id: int | None) -> int:
        """The project a new job or collection goes to (the key's, or its account's `default`)."""
        return self.submissions.resolve_project(principal, project_id)
