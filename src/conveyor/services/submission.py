"""Submission: a validated request, whatever its dialect, -> a typed ``NewJob`` and its item rows.

The pipeline is resolved once (an installed one, or a remote one of the caller's account) and
the key's right to write in the job's project is checked once. Inputs are acquired in order
(inline, URL and S3 fetched a few at a time, uploaded files, or a stored collection) and turned
into item rows within the caps before anything is written. ``JobService.submit``
(services/jobs.py) then writes the job in one transaction and hands its chunks to the dispatcher.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NotRequired, cast

from sqlalchemy import RowMapping
from typing_extensions import TypedDict

from conveyor import sealing
from conveyor.blobs import new_prefix
from conveyor.domain.access import Principal, require_write
from conveyor.domain.pull import ASYNC_API
from conveyor.domain.status import ItemStatus
from conveyor.errors import InvalidInput, NotFound, TooLarge, UnknownPipeline
from conveyor.inputs.collect import Collector
from conveyor.inputs.inline import DecodedInput
from conveyor.inputs.references import Planned, ReferencePlanner
from conveyor.inputs.resolve import BINARY, REFERENCE_KINDS, InputResolver, as_pipeline_kind
from conveyor.inputs.s3 import S3Credentials
from conveyor.inputs.upload import StagedFile
from conveyor.outputs import validate_output
from conveyor.pipelines import registry, remote
from conveyor.pipelines.base import Pipeline
from conveyor.services.collections import CollectionService, StoredSource
from conveyor.services.processing import ProcessingServices
from conveyor.services.pull import PullService
from conveyor.services.quotas import Quotas
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.auth import DEFAULT_PROJECT
from conveyor.store.jobs import NewJob

log = logging.getLogger(__name__)

JOB_TYPE_ML = "ml"
JOB_TYPE_EXPORT = "data_export"
FETCH_BY_REFERENCE = "by_reference"  # the default: items keep references, workers fetch them
FETCH_AT_SUBMIT = "at_submit"  # fetch URL/S3 inputs during the request: a 4xx if one cannot be read
FETCH_AHEAD = 8  # URL / S3 inputs fetched at once during a submission


class InputSpec(TypedDict):
    """One input as submitted: ``kind`` (text | base64 | url | s3 | manifest), ``data``, optional
    ``name`` (and ``format`` for a manifest: jsonl | csv | text)."""

    kind: str
    data: str
    name: NotRequired[str | None]
    format: NotRequired[str | None]


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
    output: dict[str, Any] | None = None  # {"uri": "s3://bucket/prefix/" | "file:///..."}: sharded JSONL
    fetch: str = FETCH_BY_REFERENCE


@dataclass(frozen=True)
class ResolvedPipeline:
    """The pipeline a job runs: its database row (the version) and the class that validates it."""

    row: RowMapping
    cls: type[Pipeline]


@dataclass(frozen=True)
class PreparedJob:
    """Everything the store needs to create the job: the job and its item rows, all checked."""

    job: NewJob
    items: list[dict[str, Any]]


class Submissions:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        dispatch_mode: str,
        resolver: InputResolver,
        collections: CollectionService,
        processing: ProcessingServices,
        quotas: Quotas,
        pull: PullService,
    ) -> None:
        self.store = store
        self.settings = settings
        self.dispatch_mode = dispatch_mode
        self.resolver = resolver
        self.collections = collections
        self.processing = processing
        self.pull = pull
        self.quotas = quotas
        self._default_projects: dict[int, int] = {}

    def prepare(
        self,
        principal: Principal,
        request: JobRequest,
        *,
        pipeline: ResolvedPipeline | None = None,
        open_for_uploads: bool = False,
        job_type: str = JOB_TYPE_ML,
    ) -> PreparedJob:
        """Check the request and acquire its inputs: the job and item rows to create, nothing
        written yet. ``open_for_uploads``: a job without items, OPEN for chunked file inputs."""
        stored = self._stored_source(principal, request)
        if stored is not None and request.project_id not in (None, stored.project_id):
            raise InvalidInput("The job's project must be the project of the collection it runs over.")
        project_id = self.resolve_project(
            principal, stored.project_id if stored is not None else request.project_id
        )
        # A slug a pull worker registered in this project wins over an installed one there.
        pulled = self._pull_pipeline(project_id, request) if pipeline is None else None
        pipeline = pipeline or pulled or self.resolve_pipeline(principal, request)
        pipeline_cls = pipeline.cls
        config = pipeline_cls.validate_config(dict(request.config))
        if request.explain and not pipeline_cls.supports_explain:
            raise InvalidInput(f"Pipeline {pipeline_cls.slug!r} does not support explain.")
        require_write(principal, project_id)
        if pulled is not None and (request.delay > 0 or request.output is not None or open_for_uploads):
            raise InvalidInput(
                "A job of a pull pipeline (async_api) takes no `delay`, `output` or chunked uploads yet."
            )
        # Before any input is read: a bad output is a 4xx at once (conveyor.outputs).
        output = validate_output(request.output, self.settings) if request.output is not None else None
        nothing = stored is None and not request.inputs and not request.files
        if nothing and request.delay <= 0 and not open_for_uploads:
            raise InvalidInput("A job needs at least one input (or a delay, for a test job).")
        if len(request.inputs) + len(request.files) > self.settings.max_inputs_per_job:
            raise TooLarge(
                f"{len(request.inputs) + len(request.files)} inputs is more than the cap of "
                f"{self.settings.max_inputs_per_job} per job."
            )
        sources: list[dict[str, Any]] = []
        blob_prefix: str | None = None
        if stored is not None:  # references to the stored items, no bytes copied
            rows, total_bytes, kinds = self.collections.item_rows(stored, pipeline_cls)
            self.quotas.check(principal, total_bytes)
        else:
            if request.fetch == FETCH_AT_SUBMIT:
                acquired: Iterable[DecodedInput] = self._acquire(request)
            else:
                planned = self._plan_references(request)
                acquired, sources = itertools.chain(planned.items, self._staged(request)), planned.sources
            if sources and pulled is not None:
                raise InvalidInput(
                    "A job of a pull pipeline (async_api) takes image inputs (URLs, S3 objects, bytes); "
                    "S3 prefixes and manifests are not supported for it yet."
                )
            if sources and request.shuffle:
                raise InvalidInput("`shuffle` cannot be combined with S3 prefixes or manifests.")
            blob_prefix = new_prefix()
            try:
                rows, total_bytes, kinds = self._item_rows(pipeline_cls, acquired, request.limit, blob_prefix)
                self.quotas.check(principal, total_bytes)
            except BaseException:
                self.discard_blobs(blob_prefix)
                raise
        if request.shuffle:
            random.shuffle(rows)  # processing order is item order (seq)
            for seq, row in enumerate(rows):
                row["seq"] = seq
        job = NewJob(
            name=request.name,
            account_id=principal.account_id,
            project_id=project_id,
            pipeline_id=pipeline.row["id"],
            job_type=job_type,
            dispatch_mode=ASYNC_API if pulled is not None else self.dispatch_mode,
            delay=request.delay,
            limit=request.limit,
            shuffle=request.shuffle,
            timeout_ms=request.timeout_ms,
            explain=request.explain,
            max_failed_ratio=(
                request.max_failed_ratio
                if request.max_failed_ratio is not None
                else self.settings.default_max_failed_ratio
            ),
            config=config,
            input_summary={
                "kinds": kinds,
                "count": len(rows),
                **({"open": True} if open_for_uploads else {}),
                **({"collect_sources": len(sources)} if sources else {}),
            },
            collect=self._collect_plan(pipeline_cls, sources, len(rows), request.limit),
            blob_prefix=blob_prefix if any(row.get("sha256") for row in rows) else None,
            input_byte_amount=total_bytes,
            submitted_by=principal.key_prefix,
            output=output,
            secret=self._sealed_credentials(request, sources, rows),
            **(stored.job_values if stored is not None else {}),
        )
        return PreparedJob(job, rows)

    # ------------------------------------------------------------ pipeline, project
    def resolve_pipeline(self, principal: Principal, request: JobRequest) -> ResolvedPipeline:
        """The request's pipeline row and class, each looked up once (else a 400)."""
        if request.pipeline_id is not None:
            try:
                row = self.store.pipelines.by_id(request.pipeline_id)
            except NotFound:
                # A bad reference in the body is bad input (400), like an unknown slug, not a missing URL.
                raise UnknownPipeline(
                    f"Unknown pipeline id {request.pipeline_id}.", pipeline_id=request.pipeline_id
                ) from None
            return ResolvedPipeline(row, self.pipeline_class(principal, row["slug"]))
        if request.pipeline:
            # Installed (or registered) here? Else a 400, before the version row is looked up.
            cls = self.pipeline_class(principal, request.pipeline)
            return ResolvedPipeline(self.store.pipelines.latest(request.pipeline), cls)
        raise InvalidInput("Give the pipeline, as `pipeline` (slug) or `pipeline_id`.")

    def _pull_pipeline(self, project_id: int, request: JobRequest) -> ResolvedPipeline | None:
        """The project's registered pull pipeline named by ``request.pipeline`` (plain slug), if any."""
        if request.pipeline_id is not None or not request.pipeline or remote.is_remote(request.pipeline):
            return None
        found = self.pull.pipeline_class(project_id, request.pipeline)
        return ResolvedPipeline(*found) if found is not None else None

    def pipeline_class(self, principal: Principal, slug: str) -> type[Pipeline]:
        """An installed pipeline, or a remote one of the caller's account (else a 400)."""
        if remote.is_remote(slug):
            return self.processing.pipeline_class(principal.account_id, slug)
        return registry.get(slug)

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

    # ------------------------------------------------------------ inputs
    def _plan_references(self, request: JobRequest) -> Planned:
        """The request's inputs by reference: checked, not fetched (see inputs/references.py)."""
        specs = request.inputs[: request.limit] if request.limit is not None else request.inputs
        collector = Collector(self.settings, credentials=request.s3_credentials)
        return ReferencePlanner(self.resolver, collector).plan(cast("list[dict[str, Any]]", specs))

    def _collect_plan(
        self, pipeline_cls: type[Pipeline], sources: list[dict[str, Any]], listed: int, limit: int | None
    ) -> dict[str, Any] | None:
        """What the job's collect stage lists, after the ``listed`` items given directly."""
        if not sources or (limit is not None and listed >= limit):
            return None
        accepted = pipeline_cls.input_kinds
        return {
            "sources": sources,
            "item_kind": BINARY if BINARY in accepted else "text",
            "limit": limit,
            "max_items": self.settings.max_inputs_per_job,
            "next_seq": listed,
            "cursor": {"source": 0, "position": {}},
            "listed": 0,
            "bytes": 0,
            "done": False,
        }

    def _sealed_credentials(
        self, request: JobRequest, sources: list[dict[str, Any]], rows: list[dict[str, Any]]
    ) -> str | None:
        """A request's own S3 credentials (Modzy aws-s3), sealed under the server secret for the
        workers that read its S3 references; erased when the job ends (never shown anywhere)."""
        if request.s3_credentials is None or request.fetch == FETCH_AT_SUBMIT:
            return None
        uses_s3 = any(s.get("bucket") or s.get("ref", "").startswith("s3://") for s in sources) or any(
            (row.get("ref") or "").startswith("s3://") for row in rows
        )
        if not uses_s3:
            return None
        secret = self.store.processing_services.secret(sealing.CREDENTIALS_SECRET)
        return sealing.seal(secret, request.s3_credentials.as_dict())

    def _staged(self, request: JobRequest) -> Iterator[DecodedInput]:
        for staged in request.files:
            yield self.resolver.staged(staged)

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
        by_reference = [i for i, spec in enumerate(specs) if spec["kind"] in REFERENCE_KINDS]
        resolver = self.resolver
        if request.s3_credentials is not None:
            resolver = resolver.with_s3_credentials(request.s3_credentials)
        with ThreadPoolExecutor(max_workers=FETCH_AHEAD, thread_name_prefix="fetch") as pool:
            ahead: dict[int, Future[list[DecodedInput]]] = {}
            queued = 0
            try:
                for index, spec in enumerate(specs):
                    while queued < len(by_reference) and len(ahead) < FETCH_AHEAD:
                        at = by_reference[queued]
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
        self,
        pipeline_cls: type[Pipeline],
        inputs: Iterable[DecodedInput],
        limit: int | None,
        blob_prefix: str,
    ) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
        """Check every input before anything is written: item rows, total bytes, kinds.

        Bytes that came with the request go to the blob store under ``blob_prefix`` (the row keeps
        the ref, size and sha256), except tiny ones (``blob_inline_bytes``), kept in the row."""
        rows: list[dict[str, Any]] = []
        total_bytes = 0
        kinds: dict[str, int] = {}
        accepted = set(pipeline_cls.input_kinds)
        for index, acquired in enumerate(itertools.islice(inputs, limit)):
            if index >= self.settings.max_inputs_per_job:
                raise TooLarge(f"More than the cap of {self.settings.max_inputs_per_job} inputs per job.")
            decoded = as_pipeline_kind(acquired, accepted, pipeline_cls.slug)
            total_bytes += len(decoded.data)
            if total_bytes > self.settings.job_bytes_cap:
                raise TooLarge(f"The job's inputs exceed the cap of {self.settings.job_bytes_cap} bytes.")
            kinds[decoded.kind] = kinds.get(decoded.kind, 0) + 1
            row: dict[str, Any] = {
                "seq": index,
                "name": decoded.name,
                "kind": decoded.kind,
                "byte_size": len(decoded.data),
                "data": decoded.data,
                "source": decoded.source,
                "status": ItemStatus.PENDING.value,
                "attempts": 0,
            }
            if decoded.ref is not None or decoded.error is not None:  # by reference: read by a worker
                row.update(data=None, byte_size=decoded.size, ref=decoded.ref)
                if decoded.error:
                    row.update(status=ItemStatus.FAILURE.value, error=f"invalid_input: {decoded.error}")
            elif len(decoded.data) > self.settings.blob_inline_bytes:
                blob = self.store.blobs.put(f"{blob_prefix}/inputs/{index}", decoded.data)
                row.update(data=None, ref=blob.ref, sha256=blob.sha256)
            rows.append(row)
        return rows, total_bytes, kinds

    def discard_blobs(self, blob_prefix: str | None) -> None:
        """Remove what a submission wrote to the blob store when it is not going to be a job."""
        if blob_prefix is None:
            return
        try:
            self.store.blobs.delete_prefix(blob_prefix)
        except Exception:  # a leftover blob costs disk, never correctness
            log.exception("could not delete the blobs under %s", blob_prefix)


def _fetch(resolver: InputResolver, index: int, spec: InputSpec) -> list[DecodedInput]:
    return list(resolver.resolve(index, spec.get("name"), spec["kind"], spec["data"]))
