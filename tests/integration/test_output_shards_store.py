"""Output shards through the store on SQLite and PostgreSQL: the worker's shard writer and the
write-back that records it, a redelivered chunk rewriting its shard whole, a retry rewriting the
original shards, and the sweeper's manifest step (idempotent, repairing missing shards)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conveyor.domain.work import Claim
from conveyor.services.outputs import OutputFinisher
from conveyor.store import Store
from conveyor.store.tables import output_shards
from conveyor.worker.shards import ShardWriter
from tests.integration.test_store_contract import new_job, outcomes, status_of, store

__all__ = ["store"]  # the parametrized fixture (sqlite, postgresql)


def lines_of(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(directory.glob("predictions-*.jsonl"))
    }


def finish_chunk(store: Store, writer: ShardWriter, claim: Claim, ok: bool = True) -> None:
    job = store.chunks.job_context(claim.job_id)
    assert job is not None
    done = outcomes(store, claim, ok)
    shards, problems = writer.write(claim, job, done)
    assert not problems
    wrote = store.chunks.write_back(claim, done, [], lease_seconds=30, complete=True, shards=shards)
    assert wrote.held


def test_shards_redelivery_retry_and_manifest(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    job_id, scope = new_job(store, 12, output={"uri": out.as_uri() + "/"}, max_failed_ratio=1.0)
    writer = ShardWriter(store, store.settings)

    # Chunk 1 (seqs 0-4): its shard is written but the worker "dies" before the write-back.
    first = store.chunks.claim("w1", 30)
    assert first is not None and (first.first_seq, first.last_seq) == (0, 4)
    job = store.chunks.job_context(job_id)
    assert job is not None
    writer.write(first, job, outcomes(store, first))
    assert [len(v) for v in lines_of(out).values()] == [5]
    store.chunks.release(first, requeue=True)  # (what the sweeper does once the lease expires)

    # Every chunk is then run to the end (seq 4 of chunk 2.. fails); the redelivered chunk 1
    # rewrites the same shard name, whole.
    while (claim := store.chunks.claim("w2", 30)) is not None:
        finish_chunk(store, writer, claim, ok=claim.first_seq != 5)
    shards = lines_of(out)
    assert sorted(shards) == ["predictions-00001.jsonl", "predictions-00002.jsonl", "predictions-00003.jsonl"]
    seqs = [line["seq"] for lines in shards.values() for line in lines]
    assert sorted(seqs) == list(range(12))
    job_row = status_of(store, job_id)
    assert job_row["status"] == "SUCCESS" and job_row["failed"] == 5
    assert job_row["output"]["shards"] == 3 and job_row["output"]["items"] == 12

    finisher = OutputFinisher(store, store.settings)
    assert finisher.finish_ended() == [job_id]
    assert finisher.finish_ended() == []  # idempotent: the manifest is current
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"] == {"total": 12, "completed": 7, "failed": 5, "canceled": 0}
    assert [s["items"] for s in manifest["shards"]] == [5, 5, 2]

    # A retry's chunk covers seqs 5-9 only, and rewrites shard 2 (their original chunk's).
    store.jobs.retry(scope, job_id)
    retry = store.chunks.claim("w3", 30)
    assert retry is not None
    finish_chunk(store, writer, retry)
    shards = lines_of(out)
    assert sorted(shards) == ["predictions-00001.jsonl", "predictions-00002.jsonl", "predictions-00003.jsonl"]
    seqs = [line["seq"] for lines in shards.values() for line in lines]
    assert sorted(seqs) == list(range(12))
    assert {line["status"] for line in shards["predictions-00002.jsonl"]} == {"SUCCESS"}

    # A lost shard (a sink failure in the worker) is written by the manifest step.
    (out / "predictions-00003.jsonl").unlink()
    with store.db.write() as conn:
        conn.execute(
            output_shards.delete().where(
                output_shards.c.job_id == job_id, output_shards.c.name == "predictions-00003.jsonl"
            )
        )
    assert OutputFinisher(store, store.settings).finish_ended() == [job_id]
    assert sorted(line["seq"] for lines in lines_of(out).values() for line in lines) == list(range(12))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"]["completed"] == 12 and manifest["job"]["status"] == "SUCCESS"
    assert status_of(store, job_id)["output"]["manifest"] == out.as_uri() + "/manifest.json"
