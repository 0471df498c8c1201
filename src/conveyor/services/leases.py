"""HTTP workers' leases: the chunk verbs of ``store.chunks``, scoped to the calling key.

``conveyor worker --server URL`` (``worker/http_worker.py``) leases item chunks here and runs
them with the same ``ChunkExecutor`` as local workers. Exactly-once is the store's: the lease
token guard and the PENDING-only write-back, which counts only the rows it moved (a replayed
or late results post changes nothing). Only item chunks of local pipelines are leased over HTTP:
delay, collect and export stages and remote pipelines need the server's database or secrets.
A chunk outside the key's scope is a 404, like a missing one.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor import media
from conveyor.clock import utcnow
from conveyor.domain.access import Principal, lease_scope
from conveyor.domain.status import RUNNABLE, ChunkKind
from conveyor.domain.work import Claim, ItemInput, ItemOutcome, JobContext, LogLine, WriteBack
from conveyor.errors import InvalidInput, NotFound
from conveyor.inputs import stored
from conveyor.pipelines import export, remote
from conveyor.settings import Settings
from conveyor.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeasedItem:
    """An item as an HTTP worker gets it: inline bytes, a public reference it reads itself, or a
    signed media path on this server for bytes only the server can read."""

    id: int
    seq: int
    name: str
    kind: str
    data_b64: str | None
    ref: str | None
    media_path: str | None
    counts_input_bytes: bool


@dataclass(frozen=True)
class Lease:
    claim: Claim
    job: JobContext
    items: list[LeasedItem]


def http_servable(slugs: Sequence[str]) -> list[str]:
    """The pipelines an HTTP worker may be sent: local ones (not remote, not the data export)."""
    return [s for s in dict.fromkeys(slugs) if not remote.is_remote(s) and s != export.SLUG]


#: Leases remembered for the worker registry (chunk id -> the worker holding it); a bound.
REMEMBERED_LEASES = 10_000


@dataclass(frozen=True)
class _Holder:
    name: str
    host: str
    account_id: int
    key_id: int


class LeaseService:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # chunk id -> the HTTP worker that leased it, for the registry's reports of the calls that
        # follow (heartbeat, results, release name no worker).
        self._holders: dict[int, _Holder] = {}

    def _seen(
        self, holder: _Holder, job_id: int | None, items_done: int = 0, pipelines: Sequence[str] | None = None
    ) -> None:
        """Report the HTTP worker to the worker registry (``GET /api/v2/workers/``; throttled there).
        A failed report is logged, never the lease call's failure: the registry is for people
        looking, the leases keep the work safe."""
        try:
            self.store.workers.seen(
                "http",
                holder.name,
                host=holder.host,
                pipelines=pipelines,
                account_id=holder.account_id,
                key_id=holder.key_id,
                job_id=job_id,
                items_done=items_done,
            )
        except Exception:
            log.exception("recording HTTP worker %s in the worker registry failed", holder.name)

    def lease(
        self, principal: Principal, *, name: str, host: str | None, pipelines: Sequence[str]
    ) -> Lease | None:
        """Lease the oldest queued item chunk of ``pipelines`` in the key's scope (None: none)."""
        scope = lease_scope(principal)
        slugs = http_servable(pipelines)
        if not slugs:
            raise InvalidInput(
                "None of these pipelines runs on HTTP workers (remote pipelines and data exports run "
                "on the server's workers).",
                pipelines=list(pipelines),
            )
        worker = f"{name}@{host}" if host else name
        holder = _Holder(name, host or "", principal.account_id, principal.key_id)
        claim = self.store.chunks.claim(
            worker, self.settings.lease_seconds, pipeline_slugs=slugs, kinds=(ChunkKind.ITEMS,), scope=scope
        )
        self._seen(holder, claim.job_id if claim is not None else None, pipelines=slugs)
        if claim is None:
            return None
        if len(self._holders) >= REMEMBERED_LEASES:
            self._holders.clear()
        self._holders[claim.chunk_id] = holder
        job = claim.job or self.store.chunks.job_context(claim.job_id)
        if job is None:  # deleted under us: hand the chunk back
            self.store.chunks.release(claim, requeue=False)
            return None
        secret = self.store.processing_services.secret(media.SECRET_NAME)
        items = [self._item(i, secret) for i in self.store.chunks.pending_items(claim)]
        return Lease(claim, job, items)

    def _item(self, item: ItemInput, secret: str) -> LeasedItem:
        if item.ref is None:
            data = base64.b64encode(item.data).decode("ascii")
            return LeasedItem(item.id, item.seq, item.name, item.kind, data, None, None, False)
        if item.ref.startswith(("http://", "https://")):
            return LeasedItem(item.id, item.seq, item.name, item.kind, None, item.ref, None, True)
        # blob:, collection-item:, s3://: the worker has no credentials for them; the media route
        # reads them for it. Bytes stored by Conveyor were counted at submit, S3 bytes count now.
        path = media.signed_url(
            "", secret, item.id, max(self.settings.media_url_seconds, self.settings.lease_seconds)
        )
        counts = not stored.is_stored(item.ref)
        return LeasedItem(item.id, item.seq, item.name, item.kind, None, None, path, counts)

    def held(self, principal: Principal, chunk_id: int, token: str) -> Claim:
        """The chunk as the caller's claim (404 outside its scope; the token is checked by each verb)."""
        claim = self.store.chunks.held(chunk_id, token, lease_scope(principal))
        if claim is None:
            raise NotFound(f"No chunk {chunk_id}.", chunk_id=chunk_id)
        return claim

    def heartbeat(self, principal: Principal, chunk_id: int, token: str) -> JobContext | None:
        """Renew the lease: the job's state, or None when the lease is lost."""
        claim = self.held(principal, chunk_id, token)
        job = self.store.chunks.heartbeat(claim, self.settings.lease_seconds)
        holder = self._holders.get(chunk_id)
        if holder is not None:
            self._seen(holder, claim.job_id)
        return job

    def post_results(
        self,
        principal: Principal,
        chunk_id: int,
        token: str,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        *,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None = None,
    ) -> WriteBack:
        """Write results back under the lease (each item at most once; see module docstring). The
        job's output shards are not written here: the sweeper writes missing shards when the job
        ends (services/outputs.py)."""
        claim = self.held(principal, chunk_id, token)
        if len({o.id for o in outcomes}) != len(outcomes):
            raise InvalidInput("An item appears twice in these outcomes.")
        wrote = self.store.chunks.write_back(
            claim,
            outcomes,
            logs,
            lease_seconds=self.settings.lease_seconds,
            complete=complete,
            stage_params=stage_params,
        )
        holder = (
            self._holders.pop(chunk_id, None) if complete or not wrote.held else self._holders.get(chunk_id)
        )
        if holder is not None:
            self._seen(holder, claim.job_id, items_done=wrote.written if wrote.held else 0)
        return wrote

    def release(self, principal: Principal, chunk_id: int, token: str, *, requeue: bool) -> None:
        """Hand the chunk back. A chunk of a job that is still running goes back to the queue
        even when the worker asks to drop it: only a canceled, finished or timed-out job's
        chunks are dropped, so no job waits for items nobody will run."""
        claim = self.held(principal, chunk_id, token)
        if not requeue:
            job = self.store.chunks.job_context(claim.job_id)
            running = job is not None and job.status in RUNNABLE
            if running and (job is None or job.deadline_at is None or utcnow() < job.deadline_at):
                requeue = True
        self.store.chunks.release(claim, requeue=requeue)
        holder = self._holders.pop(chunk_id, None)
        if holder is not None:
            self._seen(holder, None)
