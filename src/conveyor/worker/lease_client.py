"""The chunk verbs over HTTP: an HTTP worker's ``ChunkLeases`` (``worker/chunk_leases.py``).

``LeaseClient`` talks to ``/api/v2/workers/leases/`` with one keep-alive ``httpx`` client
shared by the worker's threads. Every call is retried with backoff on connection errors, 429
and 5xx; that is safe for results posts too, because the server writes only items still
PENDING and counts only the rows it moved (a replay after a lost answer changes nothing; one
after a ``complete`` post finds the lease ended and answers ``held: false``). 401 and 403 raise
``LeaseRefused``: the worker stops with its message.

``MediaFetcher`` reads what the lease could not carry inline: a signed ``media_path`` on the
server (through this client, no SSRF guard needed: it is the configured server), a public
``http(s)://`` reference through the ordinary guarded ``Fetcher``.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx

from conveyor.domain.status import ChunkKind, JobStatus
from conveyor.domain.work import Claim, ItemInput, ItemOutcome, JobContext, LogLine, WriteBack
from conveyor.errors import InputUnavailable, TooLarge
from conveyor.inputs.s3 import S3Credentials
from conveyor.settings import Settings
from conveyor.store.outputs import ShardWritten
from conveyor.worker.fetching import Fetcher

log = logging.getLogger(__name__)

PREFIX = "/api/v2/workers/leases"
#: Longest wait between two attempts of one call.
BACKOFF_CAP_SECONDS = 10.0


class LeaseRefused(Exception):
    """401/403: the key is unknown, revoked or may not lease. The worker stops."""


class LeaseError(Exception):
    """The server refused a call for another reason (4xx), or kept failing (5xx, unreachable)."""


@dataclass(frozen=True)
class Terms:
    lease_seconds: float
    heartbeat_seconds: float
    flush_seconds: float
    media_url_seconds: float


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(body)[:300]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class LeaseClient:
    def __init__(
        self,
        server_url: str,
        key: str,
        *,
        pipelines: Sequence[str],
        host: str | None = None,
        connections: int = 8,
        timeout: float = 60.0,
        retries: int = 6,
        backoff: float = 0.5,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.pipelines = list(pipelines)
        self.host = host[:48] if host else None  # the bounds of the lease request
        self.retries = retries
        #: Set by the worker on SIGTERM: a lease call then gives up instead of waiting to retry.
        self.stopping: Callable[[], bool] = lambda: False
        self.backoff = backoff
        self.http = httpx.Client(
            base_url=self.server_url,
            headers={"Authorization": f"Token {key}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._lock = threading.Lock()
        self._items: dict[int, list[ItemInput]] = {}  # chunk id -> its leased items
        self._chunk_jobs: dict[int, int] = {}  # chunk id -> its job id (while the chunk is held)
        self._jobs: dict[int, JobContext] = {}  # job id -> the state the lease or a heartbeat gave
        #: item id -> whether its fetched bytes count as input bytes (what the server said).
        self.counts: dict[int, bool] = {}

    def close(self) -> None:
        self.http.close()

    # ---------------------------------------------------------------- transport
    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, optional: bool = False
    ) -> httpx.Response:
        """One call, retried on connection errors, 429 and 5xx (LeaseError when it keeps failing).
        ``optional``: not retried once the worker is stopping (asking for more work)."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (401, 403):
                    raise LeaseRefused(_message(response))
                if response.status_code < 400:
                    return response
                if response.status_code != 429 and response.status_code < 500:
                    raise LeaseError(f"{method} {path}: {response.status_code} {_message(response)}")
                problem = f"{response.status_code} {_message(response)}"
            if attempt == self.retries or (optional and self.stopping()):
                raise LeaseError(f"{method} {path} failed after {attempt + 1} attempts: {problem}")
            wait = min(BACKOFF_CAP_SECONDS, self.backoff * 2**attempt)
            log.warning("%s %s: %s; retrying in %.1f s", method, path, problem, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def terms(self) -> Terms:
        """The server's lease timings (and a check of the key: LeaseRefused if it may not lease)."""
        body = self.request("GET", f"{PREFIX}/terms/").json()
        return Terms(
            float(body["lease_seconds"]),
            float(body["heartbeat_seconds"]),
            float(body["flush_seconds"]),
            float(body["media_url_seconds"]),
        )

    # ---------------------------------------------------------------- ChunkLeases
    def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        chunk_id: int | None = None,
        pipeline_slugs: Sequence[str] = (),
    ) -> Claim | None:
        body: dict[str, Any] = {"pipelines": list(pipeline_slugs) or self.pipelines, "name": worker[:150]}
        if self.host:
            body["host"] = self.host
        lease = self.request("POST", f"{PREFIX}/", body, optional=True).json()["lease"]
        if lease is None:
            return None
        raw = lease["job"]
        job = JobContext(
            int(raw["id"]),
            JobStatus(raw["status"]),
            raw["pipeline"],
            dict(raw["config"] or {}),
            bool(raw["explain"]),
            0.0,
            _time(raw["deadline_at"]),
        )
        items = [self._item(i) for i in lease["items"]]
        first = min((i.seq for i in items), default=0)
        last = max((i.seq for i in items), default=0)
        claim = Claim(
            int(lease["chunk_id"]),
            job.job_id,
            ChunkKind.ITEMS,
            first,
            last,
            lease["token"],
            int(lease["attempt"]),
            job=job,
        )
        with self._lock:
            self._items[claim.chunk_id] = items
            self._chunk_jobs[claim.chunk_id] = job.job_id
            self._jobs[job.job_id] = job
        return claim

    def _item(self, raw: dict[str, Any]) -> ItemInput:
        item_id = int(raw["id"])
        data = base64.b64decode(raw["data_b64"]) if raw.get("data_b64") else b""
        ref = raw.get("ref")
        if raw.get("media_path"):
            ref = f"{self.server_url}{raw['media_path']}"
        if ref is not None:
            self.counts[item_id] = bool(raw.get("counts_input_bytes"))
        return ItemInput(item_id, int(raw["seq"]), raw["name"], raw["kind"], data, ref)

    def job_context(self, job_id: int) -> JobContext | None:
        with self._lock:
            return self._jobs.get(job_id)

    def pending_items(self, claim: Claim) -> list[ItemInput]:
        with self._lock:
            return list(self._items.get(claim.chunk_id, ()))

    def heartbeat(
        self, claim: Claim, lease_seconds: float, *, delay_progress: float | None = None
    ) -> JobContext | None:
        answer = self.request("POST", f"{PREFIX}/{claim.chunk_id}/heartbeat/", {"token": claim.token}).json()
        if not answer["held"] or answer["job"] is None:
            return None
        with self._lock:
            known = self._jobs.get(claim.job_id) or claim.job
        assert known is not None  # every claim of this client carries its job
        job = replace(
            known, status=JobStatus(answer["job"]["status"]), deadline_at=_time(answer["job"]["deadline_at"])
        )
        with self._lock:
            if claim.chunk_id in self._chunk_jobs:  # not a late beat of a chunk already given back
                self._jobs[claim.job_id] = job
        return job

    def write_back(
        self,
        claim: Claim,
        outcomes: Sequence[ItemOutcome],
        logs: Sequence[LogLine],
        *,
        lease_seconds: float,
        complete: bool,
        stage_params: dict[str, list[dict[str, Any]]] | None = None,
        shards: Sequence[ShardWritten] = (),
    ) -> WriteBack:
        """Post results (``shards`` is always empty here: the server writes HTTP workers' shards)."""
        times: dict[datetime, str] = {}  # a batch's outcomes share their times: format each once
        body = {
            "token": claim.token,
            "outcomes": [_outcome(o, times) for o in outcomes],
            "logs": [
                {
                    "level": line.level,
                    "message": line.message[:20_000],
                    "created_at": line.created_at.isoformat(),
                }
                for line in logs
                if line.message
            ],
            "complete": complete,
            "stage_params": stage_params,
        }
        answer = self.request("POST", f"{PREFIX}/{claim.chunk_id}/results/", body).json()
        if complete or not answer["held"]:
            self._forget(claim)
        status = answer.get("job_status")
        return WriteBack(bool(answer["held"]), JobStatus(status) if status else None)

    def release(self, claim: Claim, *, requeue: bool) -> None:
        try:
            self.request(
                "POST", f"{PREFIX}/{claim.chunk_id}/release/", {"token": claim.token, "requeue": requeue}
            )
        finally:
            self._forget(claim)

    def finish_delay(self, claim: Claim) -> list[int]:
        raise LeaseError("delay stages run on the server's own workers")

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            for item in self._items.pop(claim.chunk_id, ()):
                self.counts.pop(item.id, None)
            self._chunk_jobs.pop(claim.chunk_id, None)
            # A long-running worker keeps the state of the jobs it holds chunks of, no others.
            if claim.job_id not in self._chunk_jobs.values():
                self._jobs.pop(claim.job_id, None)

    # ---------------------------------------------------------------- media
    def media(self, url: str, label: str, max_bytes: int) -> bytes:
        """The bytes at a signed media URL of this server (InputUnavailable, transient on 5xx)."""
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InputUnavailable(
                        f"Input {label!r}: the server answered {response.status_code} for its bytes.",
                        input=label,
                        transient=response.status_code == 429 or response.status_code >= 500,
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"Input {label!r} is over the {max_bytes}-byte cap.", input=label)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TransportError as exc:
            raise InputUnavailable(
                f"Input {label!r}: cannot read its bytes from the server: {exc}.", input=label, transient=True
            ) from None


def _outcome(o: ItemOutcome, times: dict[datetime, str]) -> dict[str, Any]:
    def at(value: datetime | None) -> str | None:
        if value is None:
            return None
        if value not in times:
            times[value] = value.isoformat()
        return times[value]

    return {
        "id": o.id,
        "ok": o.ok,
        "result": o.result,
        "error": o.error[:20_000] if o.error else o.error,
        "started_at": at(o.started_at),
        "finished_at": at(o.finished_at),
        "artifacts": [
            {
                "kind": a.kind.value,
                "media_type": a.media_type,
                "data_b64": base64.b64encode(a.data).decode("ascii"),
            }
            for a in o.artifacts
        ],
        "byte_size": o.byte_size,
    }


class MediaFetcher(Fetcher):
    """A ``Fetcher`` for an HTTP worker: signed media URLs of its server through the lease client,
    everything else as usual (public URLs under the SSRF guard; S3 never reaches here: the server
    sends S3 items as media URLs, the worker has no credentials)."""

    def __init__(self, settings: Settings, client: LeaseClient) -> None:
        super().__init__(settings)
        self.client = client
        self._media = f"{client.server_url}/api/v2/media/items/"

    def fetch(
        self,
        ref: str,
        label: str,
        *,
        credentials: S3Credentials | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> bytes:
        if ref.startswith(self._media):
            cap = self.settings.max_input_bytes
            return self._retrying(lambda: self.client.media(ref, label, cap), stop)
        return super().fetch(ref, label, credentials=credentials, stop=stop)

    def counts_input_bytes(self, item: ItemInput) -> bool:
        return self.client.counts.get(item.id, False) if item.ref is not None else False
