"""Chunked file inputs: open a job, append chunks of its inputs, close it (or cancel it).

The job is created by ``JobService.submit(open_for_uploads=True)``; this service only stages
bytes and, on close, turns them into the job's items with the same checks as inline inputs.
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.access import Principal, scope_of
from conveyor.domain.status import JobStatus
from conveyor.errors import InvalidInput, TooLarge
from conveyor.pipelines import registry
from conveyor.services.jobs import JobService
from conveyor.store.uploads import AssembledInput, UploadCaps


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

        def build_rows(inputs: list[AssembledInput]) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
            if not inputs:
                raise InvalidInput(
                    f"Job {job_id} has no uploaded inputs; upload at least one before closing."
                )
            per_item: dict[str, list[AssembledInput]] = {}
            for one in inputs:
                per_item.setdefault(one.item, []).append(one)
            rows: list[dict[str, Any]] = []
            kinds: dict[str, int] = {}
            total = 0
            for seq, (item, uploaded) in enumerate(per_item.items()):
                if len(uploaded) != 1:
                    names = ", ".join(u.input for u in uploaded)
                    raise InvalidInput(
                        f"Pipeline {pipeline_cls.slug!r} takes one input per item; item {item!r} has {names}."
                    )
                data = uploaded[0].data
                if len(data) > max_input:
                    raise TooLarge(f"Input {item!r} is over the {max_input}-byte cap per input.")
                kind = "base64" if "base64" in accepted else "text"
                if kind not in accepted:
                    raise InvalidInput(f"Pipeline {pipeline_cls.slug!r} does not accept file inputs.")
                if kind == "text":
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise InvalidInput(
                            f"Pipeline {pipeline_cls.slug!r} takes text; input {item!r} is not UTF-8."
                        ) from None
                total += len(data)
                kinds[kind] = kinds.get(kind, 0) + 1
                rows.append(
                    {
                        "seq": seq,
                        "name": item,
                        "kind": kind,
                        "byte_size": len(data),
                        "data": data,
                        "status": "PENDING",
                        "attempts": 0,
                    }
                )
            return rows, total, kinds

        self.jobs._dispatch(self.store.uploads.close(scope_of(principal), job_id, build_rows))

    def cancel(self, principal: Principal, job_id: int) -> JobStatus:
        """Cancel any job; an OPEN one also drops the chunks staged for it."""
        status = self.jobs.cancel(principal, job_id)
        self.store.uploads.discard(job_id)
        return status
