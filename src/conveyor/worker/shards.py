"""A chunk's output shard, written just before its final write-back (jobs with an ``output``).

The shard holds one line per finished item of the chunk's seq range: those written back by
earlier flushes (or by an earlier holder of the chunk) read from the store, plus the outcomes
about to be written. It is written whole and atomically (``conveyor.outputs``) and recorded by
the write-back's transaction. A worker killed between the two leaves its items PENDING; the
chunk is redelivered and the next holder rewrites the same shard name whole: never a torn or
duplicate line. A sink that keeps failing (after retries) costs an ERROR line in the job's log,
not the items: their results stay in the database and the sweeper writes the missing shard
when the job ends (``services/outputs.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from conveyor.domain.status import ItemStatus
from conveyor.domain.work import Claim, ItemOutcome, JobContext, LogLine
from conveyor.outputs import OutputSink, encode_shard, with_retries
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.outputs import ShardWritten

log = logging.getLogger(__name__)

#: Sinks kept per output uri (an S3 client is worth reusing across chunks).
SINK_CACHE = 16


def merge(records: list[dict[str, Any]], outcomes: Sequence[ItemOutcome]) -> list[dict[str, Any]]:
    """The stored records with the outcomes not yet written back applied; unfinished ones dropped."""
    by_id = {o.id: o for o in outcomes}
    out: list[dict[str, Any]] = []
    for record in records:
        outcome = by_id.get(record["item_id"])
        if outcome is not None:
            status = ItemStatus.SUCCESS if outcome.ok else ItemStatus.FAILURE
            record = {**record, "status": status.value, "result": outcome.result, "error": outcome.error}
        if record["status"] in (ItemStatus.SUCCESS.value, ItemStatus.FAILURE.value):
            out.append(record)
    return out


class ShardWriter:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._sinks: dict[str, OutputSink] = {}

    def sink(self, uri: str) -> OutputSink:
        if uri not in self._sinks:
            if len(self._sinks) >= SINK_CACHE:
                self._sinks.pop(next(iter(self._sinks)))
            self._sinks[uri] = OutputSink.for_uri(uri, self.settings)
        return self._sinks[uri]

    def write(
        self, claim: Claim, job: JobContext, outcomes: Sequence[ItemOutcome]
    ) -> tuple[list[ShardWritten], list[LogLine]]:
        """Write the shard(s) of the chunk's items (a retry chunk rewrites its items' original
        shards); what was written, and log lines for what could not be."""
        if not job.output or not job.output.get("uri"):
            return [], []
        uri = job.output["uri"]
        written: list[ShardWritten] = []
        logs: list[LogLine] = []
        try:
            sink = self.sink(uri)
            owners = self.store.outputs.owners(claim.job_id, claim.first_seq, claim.last_seq)
        except Exception as exc:
            log.exception("output %s of job %s unavailable", uri, claim.job_id)
            problem = f"Output {uri}: cannot write the shards of chunk {claim.chunk_id}: {exc}"
            return [], [LogLine("ERROR", problem)]
        for owner in owners:
            stored = self.store.outputs.records(claim.job_id, owner.first_seq, owner.last_seq)
            records = merge(stored, outcomes)
            data, lines = encode_shard(records)
            try:
                with_retries(functools.partial(sink.write_shard, owner.name, data))
            except Exception as exc:
                log.exception("writing shard %s of job %s failed", owner.name, claim.job_id)
                logs.append(
                    LogLine(
                        "ERROR",
                        f"Output {uri}: writing {owner.name} failed ({type(exc).__name__}: {exc}); its "
                        "results are kept in the database and the shard is written again when the job ends",
                    )
                )
                continue
            written.append(ShardWritten(owner.name, owner.chunk_id, lines, len(data)))
        return written, logs
