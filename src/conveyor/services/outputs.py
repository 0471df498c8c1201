"""The end of a job's output: missing shards written, then ``manifest.json`` (run by the sweeper,
so it happens even when the worker that finished the job died).

For each finished job with an output whose manifest does not describe its current finish yet:
every original chunk's shard is checked against the database (a chunk dropped when the job
stopped early, a shard whose sink write failed in the worker) and written again where it is
missing or short, and the temporary files of writers killed mid-write are removed; then the
manifest (shards, item counts by status, the job's id and status) is written and
``jobs.output`` records it. Idempotent: a second sweeper, or the next period, finds
the manifest current and does nothing; a retried job gets a new manifest when it ends again.
A job that did not succeed had chunks dropped, whose workers may still be writing: its step
waits ``CONVEYOR_CANCEL_GRACE_SECONDS`` after the end. A sink that keeps failing is retried with
a growing backoff, at most ``MANIFEST_ATTEMPTS`` times, each failure an ERROR line in the job's
log.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import timedelta
from typing import Any

from conveyor.clock import isoformat, utcnow
from conveyor.outputs import MANIFEST, OutputSink, encode_shard, with_retries
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.outputs import EndedOutput, ShardWritten

log = logging.getLogger(__name__)

MANIFEST_ATTEMPTS = 5
RETRY_SECONDS = 2.0  # first wait after a failed manifest step; doubles per attempt
#: A job finished by a transaction that committed after a scan began is still seen by the next.
SCAN_SLACK = timedelta(seconds=60)


class OutputFinisher:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._since: Any = None  # None: the first scan looks at every finished job with an output
        self._retry_at: dict[int, float] = {}

    def finish_ended(self) -> list[int]:
        """Write the manifests that are due; the ids of the jobs whose manifest was written."""
        started = utcnow()
        ended = self.store.outputs.ended(updated_since=self._since)
        self._since = started - SCAN_SLACK
        done: list[int] = []
        settle = started - timedelta(seconds=self.settings.cancel_grace_seconds)
        for job in ended:
            if self._current(job) or time.monotonic() < self._retry_at.get(job.job_id, 0.0):
                continue
            if job.status != "SUCCESS" and job.finished_at is not None and job.finished_at > settle:
                continue  # chunks were dropped: let their workers notice before the shards are checked
            if int(job.output.get("manifest_attempts", 0)) >= MANIFEST_ATTEMPTS:
                continue
            if self.finish(job):
                done.append(job.job_id)
        return done

    @staticmethod
    def _current(job: EndedOutput) -> bool:
        return job.output.get("manifest_for") == isoformat(job.finished_at)

    def finish(self, job: EndedOutput) -> bool:
        uri = job.output["uri"]
        try:
            sink = OutputSink.for_uri(uri, self.settings)
            self._repair(job, sink)
            sink.remove_partial()  # a worker killed mid-write left its temporary file
            doc = self._manifest(job, sink)
            with_retries(functools.partial(sink.write_manifest, doc))
        except Exception as exc:
            return self._failed(job, exc)
        self._retry_at.pop(job.job_id, None)
        return self.store.outputs.set_manifest(
            job.job_id,
            job.finished_at,
            {
                "manifest": sink.location(MANIFEST),
                "manifest_for": isoformat(job.finished_at),
                "manifest_attempts": 0,
                "manifest_error": None,
            },
        )

    def _repair(self, job: EndedOutput, sink: OutputSink) -> None:
        """Write the shards that are missing or short of the job's finished items."""
        recorded = {s["name"]: s["items"] for s in self.store.outputs.shards(job.job_id)}
        if sum(recorded.values()) == job.completed + job.failed:
            return  # the common case: every finished item is in a recorded shard
        owners = self.store.outputs.owners(job.job_id, 0, 2**31 - 1)
        counts = self.store.outputs.finished_counts(job.job_id, owners)
        written: list[ShardWritten] = []
        for owner in owners:
            if counts[owner.name] == recorded.get(owner.name, 0):
                continue  # complete (or nothing of it finished: no shard)
            records = [
                r
                for r in self.store.outputs.records(job.job_id, owner.first_seq, owner.last_seq)
                if r["status"] in ("SUCCESS", "FAILURE")
            ]
            data, lines = encode_shard(records)
            with_retries(functools.partial(sink.write_shard, owner.name, data))
            written.append(ShardWritten(owner.name, owner.chunk_id, lines, len(data)))
        self.store.outputs.record_shards(job.job_id, written)

    def _manifest(self, job: EndedOutput, sink: OutputSink) -> dict[str, Any]:
        shards = self.store.outputs.shards(job.job_id)
        return {
            "job": {
                "id": job.job_id,
                "job_identifier": job.uuid,
                "name": job.name,
                "status": job.status,
                "finished_at": isoformat(job.finished_at),
            },
            "uri": sink.uri,
            "items": {
                "total": job.total,
                "completed": job.completed,
                "failed": job.failed,
                "canceled": job.canceled,
            },
            "shards": shards,
            "shard_count": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
            "written_at": isoformat(utcnow()),
        }

    def _failed(self, job: EndedOutput, exc: Exception) -> bool:
        attempts = int(job.output.get("manifest_attempts", 0)) + 1
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("output manifest of job %s failed (attempt %d): %s", job.job_id, attempts, reason)
        self._retry_at[job.job_id] = time.monotonic() + RETRY_SECONDS * 2 ** (attempts - 1)
        final = attempts >= MANIFEST_ATTEMPTS
        more = "; giving up" if final else "; trying again later"
        self.store.outputs.set_manifest(
            job.job_id,
            job.finished_at,
            {"manifest_attempts": attempts, "manifest_error": reason},
            log=("ERROR", f"Output {job.output['uri']}: writing the manifest failed ({reason}){more}"),
        )
        return False
