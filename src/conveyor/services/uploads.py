"""Chunked file inputs: open a job, append chunks of its inputs, close it (or cancel it).

The job is created by ``JobService.submit(open_for_uploads=True)``; this service only stages
bytes and, on close, turns them into the job's items with the same checks as inline inputs.
Closing streams each input to the blob store under the job's prefix (``jobs.blob_prefix``,
deleted with the job): the items hold a ``blob:`` ref, its size and sha256, no bytes.
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.blobs import new_prefix
from conveyor.domain.access import Principal, scope_of
from conveyor.domain.status import JobStatus
from conveyor.errors import InvalidInput, TooLarge
from conveyor.pipelines import registry
from conveyor.services.jobs import JobService
from conveyor.store.uploads import AssembledInput, UploadCaps

log = logging.getLogger(__name__)


class UploadService:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.settings = jobs.settings

    def append(self, principal: Principal, job_id: int, item: str, input_name: str, data: bytes) -> int:
        self.jobs.require_write_on(principal, job_id)
        if not data:
            raise InvalidInput("Empty chunk: send the bytes of the input as the multipart field `input`.")
        caps = UploadCaps(
            self.settings.max_input_bytes, self.settings.job_bytes_cap, self.settings.max_inputs_per_job
        )
        return self.store.uploads.append(scope_of(principal), job_id, item, input_name, data, caps)

    def close(self, principal: Principal, job_id: int) -> None:
        self.jobs.require_write_on(principal, job_id)
        job = self.jobs.get(principal, job_id)
        pipeline_cls = registry.get(job["pipeline_slug"])
        accepted = set(pipeline_cls.input_kinds)
        max_input = self.settings.max_input_bytes
        blobs = self.store.blobs
        prefix = job["blob_prefix"] or new_prefix()
        uploads = f"{prefix}/uploads"

        def build_rows(inputs: list[AssembledInput]) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
            if not inputs:
                raise InvalidInput(
                    f"Job {job_id} has no uploaded inputs; upload at least one before closing."
                )
            per_item: dict[str, list[AssembledInput]] = {}
            for one in inputs:
                per_item.setdefault(one.item, []).append(one)
            kind = "base64" if "base64" in accepted else "text"
            if kind not in accepted:
                raise InvalidInput(f"Pipeline {pipeline_cls.slug!r} does not accept file inputs.")
            for item, uploaded in per_item.items():  # every check before any byte is written
                if len(uploaded) != 1:
                    names = ", ".join(u.input for u in uploaded)
                    raise InvalidInput(
                        f"Pipeline {pipeline_cls.slug!r} takes one input per item; item {item!r} has {names}."
                    )
                if uploaded[0].size > max_input:
                    raise TooLarge(f"Input {item!r} is over the {max_input}-byte cap per input.")
            rows: list[dict[str, Any]] = []
            total = 0
            for seq, (item, uploaded) in enumerate(per_item.items()):
                if kind == "text":
                    data = b"".join(uploaded[0].chunks())  # within the per-input cap
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise InvalidInput(
                            f"Pipeline {pipeline_cls.slug!r} takes text; input {item!r} is not UTF-8."
                        ) from None
                    stored = blobs.put(f"{uploads}/{seq}", data)
                else:
                    stored = blobs.put_stream(f"{uploads}/{seq}", uploaded[0].chunks())
                total += stored.size
                rows.append(
                    {
                        "seq": seq,
                        "name": item,
                        "kind": kind,
                        "byte_size": stored.size,
                        "data": None,
                        "ref": stored.ref,
                        "sha256": stored.sha256,
                        "source": f"upload:{item}",
                        "status": "PENDING",
                        "attempts": 0,
                    }
                )
            return rows, total, dict.fromkeys([kind], len(rows))

        try:
            queued = self.store.uploads.close(scope_of(principal), job_id, build_rows, blob_prefix=prefix)
        except BaseException:
            try:  # nothing of the close was committed: drop the blobs it wrote
                blobs.delete_prefix(uploads)
            except Exception:
                log.exception("deleting the blobs of job %s's failed close failed", job_id)
            raise
        self.jobs._dispatch(queued)

    def cancel(self, principal: Principal, job_id: int) -> JobStatus:
        """Cancel any job; an OPEN one also drops the chunks staged for it."""
        status = self.jobs.cancel(principal, job_id)
        self.store.uploads.discard(job_id)
        return status
