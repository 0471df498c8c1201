"""Job use cases shared by the API, the CLI (through the API) and tests: submit, run, cancel, retry."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NotRequired

from sqlalchemy import RowMapping
from typing_extensions import TypedDict

from conveyor import exports
from conveyor.dispatch.base import Dispatcher
from conveyor.domain.status import JobStatus
from conveyor.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge, UnknownPipeline
from conveyor.inputs.inline import DecodedInput
from conveyor.inputs.resolve import REFERENCE_KINDS, InputResolver, as_pipeline_kind
from conveyor.inputs.s3 import S3Credentials
from conveyor.inputs.upload import StagedFile
from conveyor.pipelines import export, registry, remote
from conveyor.pipelines.base import Pipeline
from conveyor.pipelines.export import DataExport
from conveyor.services.collections import CollectionService, StoredSource
from conveyor.services.processing import ProcessingServices
from conveyor.services.quotas import Quotas
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.auth import DEFAULT_PROJECT, WRITE_ROLES, Principal
from conveyor.store.history import HistoryPage, HistoryQuery
from conveyor.store.jobs import Queued, Scope
from conveyor.store.uploads import is_open

JOB_TYPE_ML = "ml"
JOB_TYPE_EXPORT = "data_export"
MAX_EXPORT_JOBS = 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FETCH_AHEAD = 8  # URL / S3 inputs fetched at once during a submission


class InputSpec(TypedDict):
    """One input as submitted: ``kind`` (text | base64 | url | s3), ``data``, optional ``name``."""

    kind: str
    data: str
    name: NotRequired[str | None]


@dataclass
class JobRequest:
    """A validated submission, whatever dialect it arrived in."""

    name: str
    inputs: list[InputSpec]
    pipeline: str | None = None
    pipeline_id: int | None = None
    project_id: int | None = None
    delay: float = 0.0
    timeout_ms: int | None = None
    explain: bool = False
    max_failed_ratio: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    shuffle: bool = False
    files: list[StagedFile] = field(default_factory=list)  # uploaded, after the inline inputs
    collection_id: int | None = None  # run over a stored collection (sampled by `method`) ...
    method: str = "all"
    source_item_id: int | None = None  # ... or over one stored item
    s3_credentials: S3Credentials | None = field(default=None, repr=False)  # this request's S3 inputs only


def scope_of(principal: Principal) -> Scope:
    return Scope(principal.account_id, principal.visible_projects())


class JobService:
    def __init__(self, store: Store, dispatcher: Dispatcher, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self._default_projects: dict[int, int] = {}
        self.quotas = Quotas(store, settings)
        self.resolver = InputResolver(settings)
        self.collections = CollectionService(store, settings, self.resolver)
        self.processing = ProcessingServices(store, settings)

    # ---------------------------------------------------------------- writes
    def submit(
        self, principal: Principal, request: JobRequest, *, start_now: bool, open_for_uploads: bool = False
    ) -> int:
        """Create a job with all its items. ``open_for_uploads``: create it without items, OPEN for
        chunked file inputs (services/uploads.py); closing it adds the items and queues it."""
        _require_write(principal)
        pipeline_row = self._resolve_pipeline(principal, request)
        pipeline_cls = self._pipeline_class(principal, pipeline_row["slug"])
        return self._create(
            principal,
            request,
            pipeline_row,
            pipeline_cls,
            start_now=start_now,
            open_for_uploads=open_for_uploads,
        )

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
        _require_write(principal)
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
        row = self.store.pipelines.latest(export.SLUG)
        return self._create(principal, request, row, DataExport, start_now=True, job_type=JOB_TYPE_EXPORT)

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

    def _create(
        self,
        principal: Principal,
        request: JobRequest,
        pipeline_row: RowMapping,
        pipeline_cls: type[Pipeline],
        *,
        start_now: bool,
        open_for_uploads: bool = False,
        job_type: str = JOB_TYPE_ML,
    ) -> int:
        config = pipeline_cls.validate_config(dict(request.config))
        if request.explain and not pipeline_cls.supports_explain:
            raise InvalidInput(f"Pipeline {pipeline_cls.slug!r} does not support explain.")
        stored = self._stored_source(principal, request)
        if stored is not None and request.project_id not in (None, stored.project_id):
            raise InvalidInput("The job's project must be the project of the collection it runs over.")
        project_id = self.resolve_project(
            principal, stored.project_id if stored is not None else request.project_id
        )
        _require_write(principal, project_id)
        nothing = stored is None and not request.inputs and not request.files
        if nothing and request.delay <= 0 and not open_for_uploads:
            raise InvalidInput("A job needs at least one input (or a delay, for a test job).")
        if len(request.inputs) + len(request.files) > self.settings.max_inputs_per_job:
            raise TooLarge(
                f"{len(request.inputs) + len(request.files)} inputs is more than the cap of "
                f"{self.settings.max_inputs_per_job} per job."
            )
        acquired = iter(stored.inputs) if stored is not None else self._acquire(request)
        rows, total_bytes, kinds = self._item_rows(pipeline_cls, acquired, request.limit)
        self.quotas.check(principal, total_bytes)
        if request.shuffle:
            random.shuffle(rows)  # processing order is item order (seq)
            for seq, row in enumerate(rows):
                row["seq"] = seq
        values = {
            "name": request.name,
            "account_id": principal.account_id,
            "project_id": project_id,
            "pipeline_id": pipeline_row["id"],
            "job_type": job_type,
            "dispatch_mode": self.dispatcher.mode,
            "delay": request.delay,
            "limit": request.limit,
            "shuffle": request.shuffle,
            "timeout_ms": request.timeout_ms,
            "explain": request.explain,
            "max_failed_ratio": (
                request.max_failed_ratio
                if request.max_failed_ratio is not None
                else self.settings.default_max_failed_ratio
            ),
            "config": config,
            "input_summary": {
                "kinds": kinds,
                "count": len(rows),
                **({"open": True} if open_for_uploads else {}),
            },
            "total": len(rows),
            "pending": len(rows),
            "input_byte_amount": total_bytes,
            "submitted_by": principal.key_prefix,
            **(stored.job_values if stored is not None else {}),
        }
        job_id, queued = self.store.jobs.create(values, rows, start=start_now and not open_for_uploads)
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
        job = self.require_write_on(principal, job_id)
        self.store.jobs.delete(scope_of(principal), job_id)
        self.audit(principal, "job.delete", job)

    def audit(self, principal: Principal, action: str, job: RowMapping) -> None:
        """Who did what to a job (its status changes are in job_events; this outlives a delete)."""
        self.store.audit.record(
            principal.account_id, principal.key_prefix, action, f"job:{job['uuid']}", job["project_id"]
        )

    def require_write_on(self, principal: Principal, job_id: int) -> RowMapping:
        """The job, if the key may act on it: 403 for a read-only key, 404 for a job it cannot see,
        403 when its role in the job's project is read-only."""
        _require_write(principal)
        job = self.store.jobs.get(scope_of(principal), job_id)
        _require_write(principal, job["project_id"])
        return job

    def _stored_source(self, principal: Principal, request: JobRequest) -> StoredSource | None:
        given = [
            request.collection_id is not None,
            request.source_item_id is not None,
            bool(request.inputs or request.files),
        ]
        if sum(given) > 1:
            raise InvalidInput(
                "A job runs over a collection (`collection_id`), one stored item "
                "(`source_image_single_id`) or given inputs; not several of them."
            )
        if request.method != "all" and request.collection_id is None:
            raise InvalidInput("`method` applies only to a job over a collection (`collection_id`).")
        if request.collection_id is None and request.source_item_id is None:
            return None
        return self.collections.job_source(
            principal,
            collection_id=request.collection_id,
            method=request.method,
            limit=request.limit,
            item_id=request.source_item_id,
        )

    def _acquire(self, request: JobRequest) -> Iterator[DecodedInput]:
        """Every input of the request, in order, as bytes.

        URL and S3 inputs are fetched up to ``FETCH_AHEAD`` at a time in threads, while the
        caller consumes them in order; so at most that many fetched inputs wait in memory, and
        the caps (checked by the caller) stop the fetching early.
        """
        # Each descriptor gives at least one input, so the first `limit` descriptors are enough.
        specs = request.inputs[: request.limit] if request.limit is not None else request.inputs
        remote = [i for i, spec in enumerate(specs) if spec["kind"] in REFERENCE_KINDS]
        resolver = self.resolver
        if request.s3_credentials is not None:
            resolver = resolver.with_s3_credentials(request.s3_credentials)
        with ThreadPoolExecutor(max_workers=FETCH_AHEAD, thread_name_prefix="fetch") as pool:
            ahead: dict[int, Future[list[DecodedInput]]] = {}
            queued = 0
            try:
                for index, spec in enumerate(specs):
                    while queued < len(remote) and len(ahead) < FETCH_AHEAD:
                        at = remote[queued]
                        ahead[at] = pool.submit(_fetch, resolver, at, specs[at])
                        queued += 1
                    if index in ahead:
                        yield from ahead.pop(index).result()
                    else:
                        yield from resolver.resolve(index, spec.get("name"), spec["kind"], spec["data"])
            finally:
                for future in ahead.values():
                    future.cancel()
        for staged in request.files:
            yield self.resolver.staged(staged)

    def _item_rows(
        self, pipeline_cls: type[Pipeline], inputs: Iterable[DecodedInput], limit: int | None
    ) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
        """Check every input before anything is written: item rows, total bytes, kinds."""
        rows: list[dict[str, Any]] = []
        total_bytes = 0
        kinds: dict[str, int] = {}
        accepted = set(pipeline_cls.input_kinds)
        for index, acquired in enumerate(itertools.islice(inputs, limit)):
            if index >= self.settings.max_inputs_per_job:
                raise TooLarge(f"More than the cap of {self.settings.max_inputs_per_job} inputs per job.")
            decoded = as_pipeline_kind(acquired, accepted, pipeline_cls.slug)
            total_bytes += len(decoded.data)
            if total_bytes > self.settings.max_job_bytes:
                raise TooLarge(f"The job's inputs exceed the cap of {self.settings.max_job_bytes} bytes.")
            kinds[decoded.kind] = kinds.get(decoded.kind, 0) + 1
            rows.append(
                {
                    "seq": index,
                    "name": decoded.name,
                    "kind": decoded.kind,
                    "byte_size": len(decoded.data),
                    "data": decoded.data,
                    "source": decoded.source,
                    "status": "PENDING",
                    "attempts": 0,
                }
            )
        return rows, total_bytes, kinds

    def _dispatch(self, queued: Queued | None) -> None:
        if queued is not None and queued.chunk_ids:
            self.dispatcher.enqueue(queued.chunk_ids)

    # ----------------------------------------------------------------- reads
    def get(self, principal: Principal, job_id: int) -> RowMapping:
        return self.store.jobs.get(scope_of(principal), job_id)

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

    # --------------------------------------------------------------- helpers
    def _pipeline_class(self, principal: Principal, slug: str) -> type[Pipeline]:
        """An installed pipeline, or a remote one of the caller's account (else a 400)."""
        if remote.is_remote(slug):
            return self.processing.pipeline_class(principal.account_id, slug)
        return registry.get(slug)

    def _resolve_pipeline(self, principal: Principal, request: JobRequest) -> RowMapping:
        if request.pipeline_id is not None:
            try:
                return self.store.pipelines.by_id(request.pipeline_id)
            except NotFound:
                # A bad reference in the body is bad input (400), like an unknown slug, not a missing URL.
                raise UnknownPipeline(
                    f"Unknown pipeline id {request.pipeline_id}.", pipeline_id=request.pipeline_id
                ) from None
        if request.pipeline:
            self._pipeline_class(principal, request.pipeline)  # installed (or registered) here? else a 400
            return self.store.pipelines.latest(request.pipeline)
        raise InvalidInput("Give the pipeline, as `pipeline` (slug) or `pipeline_id`.")

    def resolve_project(self, principal: Principal, project_id: int | None) -> int:
        if project_id is None:
            if principal.project_id is not None:
                return principal.project_id
            # Each account has its own `default` project: a job never lands in another tenant's project.
            if principal.account_id not in self._default_projects:
                self._default_projects[principal.account_id] = self.store.auth.ensure_project(
                    principal.account_id, DEFAULT_PROJECT, "Default project"
                )
            return self._default_projects[principal.account_id]
        allowed = principal.visible_projects()
        if allowed is not None and project_id not in allowed:
            raise NotFound(f"Project {project_id} not found.")
        visible = {row["id"] for row in self.store.auth.projects(principal.account_id, None)}
        if project_id not in visible:
            raise NotFound(f"Project {project_id} not found.")
        return project_id


def _fetch(resolver: InputResolver, index: int, spec: InputSpec) -> list[DecodedInput]:
    return list(resolver.resolve(index, spec.get("name"), spec["kind"], spec["data"]))


def _require_write(principal: Principal, project_id: int | None = None) -> None:
    """403 for a read-only key: anywhere (no project given), or in ``project_id``."""
    if project_id is None:
        if not principal.can_write:
            raise Forbidden(f"This API key is read-only (role {principal.role}).")
        return
    role = principal.role_in(project_id)
    if role not in WRITE_ROLES:
        raise Forbidden(f"This API key is read-only in this project (role {role}).", project_id=project_id)
