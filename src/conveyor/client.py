"""Python client for Conveyor's native ``/api/v2`` API.

    from conveyor.client import ConveyorClient, text_input

    with ConveyorClient() as conveyor:  # CONVEYOR_URL and CONVEYOR_KEY from the environment
        job = conveyor.submit("test-delay", [text_input("hello"), text_input("world")])
        final = conveyor.wait(job["id"], on_update=lambda j: print(j["status"]))
        for row in conveyor.iter_results(final["id"]):
            print(row["name"], row["status"], row["result"])

Jobs by reference (nothing is downloaded at submit; the workers read each input)::

        conveyor.submit("imagenet-classifier", [reference_input("s3://photos/2026/")])
        conveyor.submit("imagenet-classifier", [manifest_file("list.jsonl")], output="s3://out/run-1/")
        conveyor.submit("digits", [url_input("https://host/7.png")], fetch="at_submit")  # 4xx up front

Every call returns the server's JSON as plain dicts (the shapes are documented in the
server's OpenAPI page, ``/docs``). A non-2xx answer raises :class:`ConveyorAPIError` with
the server's own error code and message; a server that cannot be reached raises
:class:`ConveyorConnectionError`. Only ``httpx`` and the standard library are needed.

The job reads (``get_job``, ``list_jobs``, ``items``) revalidate: the last ETag and body of each
URL are kept and sent as ``If-None-Match``; a ``304 Not Modified`` reuses the kept body.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
CACHED_URLS = 64  # conditional GETs: the last ETag and body of this many URLs are kept
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"})
ExportFormat = Literal["json", "jsonl", "csv"]
ManifestFormat = Literal["jsonl", "csv", "text"]
FetchMode = Literal["by_reference", "at_submit"]
REFERENCE_SCHEMES = ("http://", "https://", "s3://")
MANIFEST_SUFFIXES: tuple[tuple[str, ManifestFormat], ...] = (
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".csv", "csv"),
    (".txt", "text"),
)
Job = dict[str, Any]


class ConveyorClientError(Exception):
    """Root of the client's errors."""


class ConveyorAPIError(ConveyorClientError):
    """The server answered with a non-2xx status.

    ``code`` and ``message`` are the server's ``error`` and ``message`` fields (for example
    ``unknown_pipeline`` and ``Unknown pipeline 'x'; installed: digits, test-delay.``).
    """

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class ConveyorConnectionError(ConveyorClientError):
    """The server could not be reached (refused, timed out, DNS...)."""


# --------------------------------------------------------------------------- input builders
def text_input(text: str, name: str | None = None) -> dict[str, Any]:
    """An inline UTF-8 text input. Without a name the server calls it ``input-<n>``."""
    return {"name": name, "kind": "text", "data": text}


def bytes_input(data: bytes, name: str | None = None) -> dict[str, Any]:
    """Raw bytes (an image, say) as a base64 input."""
    return {"name": name, "kind": "base64", "data": base64.b64encode(data).decode("ascii")}


def file_input(path: str | os.PathLike[str], name: str | None = None) -> dict[str, Any]:
    """A file's bytes as a base64 input, named after the file unless ``name`` is given."""
    file = Path(path)
    return bytes_input(file.read_bytes(), name or file.name)


def url_input(url: str, name: str | None = None) -> dict[str, Any]:
    """An ``http(s)://`` URL (named after its last path part). Stored as a reference and read by
    a worker, or read during the request with ``submit(..., fetch="at_submit")``."""
    return {"name": name, "kind": "url", "data": url}


def s3_input(address: str, name: str | None = None) -> dict[str, Any]:
    """An S3 object ``s3://bucket/key``, or ``s3://bucket/prefix/`` for every object under it
    (a prefix is listed by the job's ``collect`` stage, page by page, while items run)."""
    return {"name": name, "kind": "s3", "data": address}


def reference_input(address: str, name: str | None = None) -> dict[str, Any]:
    """:func:`url_input` or :func:`s3_input`, by the address's scheme (``http(s)://``, ``s3://``)."""
    if address.startswith("s3://"):
        return s3_input(address, name)
    if address.startswith(REFERENCE_SCHEMES):
        return url_input(address, name)
    raise ValueError(f"{address!r} is not an http(s):// URL or an s3:// address.")


def is_reference(value: str) -> bool:
    """Whether ``value`` is an address :func:`reference_input` takes (http(s):// or s3://)."""
    return value.startswith(REFERENCE_SCHEMES)


def manifest_input(
    manifest: str, *, format: ManifestFormat | None = None, name: str | None = None
) -> dict[str, Any]:
    """A manifest: a list of references, one per entry (JSONL ``{"uri", "name"?}`` lines, CSV
    with a ``uri`` column and optionally ``name``, or plain text with one URI a line).

    ``manifest`` is either the manifest's own text (parsed at submit: each entry becomes an
    item) or the ``http(s)://`` / ``s3://`` address of a manifest file (read by the job's
    ``collect`` stage). ``format`` defaults to the address's file name, else the first line.
    """
    spec: dict[str, Any] = {"name": name, "kind": "manifest", "data": manifest}
    if format is not None:
        spec["format"] = format
    return spec


def manifest_file(
    path: str | os.PathLike[str], *, format: ManifestFormat | None = None, name: str | None = None
) -> dict[str, Any]:
    """A local manifest file, sent inline (its text), its format from its suffix (``.jsonl`` or
    ``.ndjson``, ``.csv``, ``.txt``) unless given, else detected from its first line."""
    file = Path(path)
    return manifest_input(
        file.read_text(encoding="utf-8"),
        format=format or manifest_format_of(file.name),
        name=name or file.name,
    )


def manifest_format_of(filename: str) -> ManifestFormat | None:
    """The manifest format a file name says (None: let the server detect it)."""
    lowered = filename.lower().split("?", 1)[0]
    for suffix, fmt in MANIFEST_SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    return None


def is_terminal(job: Mapping[str, Any]) -> bool:
    """Whether the job is finished (SUCCESS, FAILURE, REVOKED or TIMEDOUT)."""
    return job.get("status") in TERMINAL_STATUSES


# --------------------------------------------------------------------------- the client
class ConveyorClient:
    """A synchronous client. Use it as a context manager, or call :meth:`close`.

    ``url`` defaults to ``$CONVEYOR_URL`` (else ``http://127.0.0.1:8000``) and ``key`` to
    ``$CONVEYOR_KEY``; ``timeout`` is the per-request timeout in seconds.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL).rstrip("/")
        self.key = key if key is not None else os.environ.get("CONVEYOR_KEY")
        headers = {"Accept": "application/json", "User-Agent": "conveyor-client"}
        if self.key:
            headers["Authorization"] = f"Token {self.key}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        # URL -> (ETag, body bytes) of the last 200 of a job read; oldest first (bounded).
        self._cached: dict[str, tuple[str, bytes]] = {}

    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=_clean(params), json=json_body)
        except httpx.TransportError as exc:
            raise ConveyorConnectionError(f"Cannot reach Conveyor at {self.url}: {exc}") from exc
        _raise_for_status(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    def _get_revalidated(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET with ``If-None-Match``: the server's ``304 Not Modified`` reuses the body kept
        with that ETag (the job reads answer with one); a poll of an unchanged job costs the
        server one small read and sends no body. The cache is per URL and bounded."""
        request = self._http.build_request("GET", path, params=_clean(params))
        url = str(request.url)
        kept = self._cached.get(url)
        if kept is not None:
            request.headers["If-None-Match"] = kept[0]
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise ConveyorConnectionError(f"Cannot reach Conveyor at {self.url}: {exc}") from exc
        if response.status_code == 304 and kept is not None:
            self._cached[url] = self._cached.pop(url)  # most recently used last
            return json.loads(kept[1])
        _raise_for_status(response)
        etag = response.headers.get("ETag")
        self._cached.pop(url, None)
        if etag:
            self._cached[url] = (etag, response.content)
            while len(self._cached) > CACHED_URLS:
                del self._cached[next(iter(self._cached))]
        return response.json()

    @contextmanager
    def _stream(self, path: str, params: Mapping[str, Any]) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", path, params=_clean(params)) as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                yield response
        except httpx.TransportError as exc:
            raise ConveyorConnectionError(f"Cannot reach Conveyor at {self.url}: {exc}") from exc

    # ------------------------------------------------------------------ jobs: writes
    def submit(
        self,
        pipeline: str | int,
        inputs: Sequence[dict[str, Any]] = (),
        *,
        files: Sequence[str | os.PathLike[str]] = (),
        name: str | None = None,
        start_now: bool = True,
        delay: float = 0,
        timeout_ms: int | None = None,
        explain: bool = False,
        max_failed_ratio: float | None = None,
        config: Mapping[str, Any] | None = None,
        project_id: int | None = None,
        limit: int | None = None,
        shuffle: bool = False,
        collection_id: int | None = None,
        method: str | None = None,
        source_image_single_id: int | None = None,
        fetch: FetchMode | None = None,
        output: str | Mapping[str, Any] | None = None,
    ) -> Job:
        """Submit a job and return it (status PENDING, or CREATED with ``start_now=False``).

        ``pipeline`` is a slug (``"digits"``) or a pipeline id (a specific version).
        ``inputs`` come from :func:`text_input`, :func:`bytes_input`, :func:`file_input`,
        :func:`url_input`, :func:`s3_input`, :func:`reference_input`, :func:`manifest_input`
        or :func:`manifest_file`. ``files`` are paths uploaded as multipart
        (streamed from disk, after ``inputs``); each becomes an item named after the file.
        ``timeout_ms`` counts from queueing; past it the job ends TIMEDOUT. Instead of inputs,
        a job may run over a stored collection (``collection_id``, sampled by ``method``:
        all | first | random | last_and_random, and ``limit``) or one stored item.

        ``fetch`` (server default ``"by_reference"``): URL, S3 and manifest inputs are stored as
        references and read by the workers, an unreadable one failing its item; ``"at_submit"``
        reads them during the request and refuses the job with a 4xx if one cannot be read.
        ``output`` (``"s3://bucket/prefix/"`` or ``"file:///dir/"``, or the whole
        ``{"uri": ...}`` object) asks the server to write the results there as sharded JSONL;
        the job's ``output`` field then counts the shards, items and bytes written.
        """
        body: dict[str, Any] = {
            "name": name or _default_name(pipeline, inputs, files),
            "inputs": [{k: v for k, v in i.items() if v is not None} for i in inputs],
            "delay": delay,
            "timeout": timeout_ms,
            "explain": explain,
            "max_failed_ratio": max_failed_ratio,
            "config": dict(config or {}),
            "project_id": project_id,
            "limit": limit,
            "shuffle": shuffle,
            "collection_id": collection_id,
            "method": method,
            "source_image_single_id": source_image_single_id,
            "fetch": fetch,
            "output": {"uri": output} if isinstance(output, str) else (dict(output) if output else None),
        }
        if not body["inputs"]:
            del body["inputs"]
        if isinstance(pipeline, int):
            body["pipeline_id"] = pipeline
        else:
            body["pipeline"] = pipeline
        body = {k: v for k, v in body.items() if v is not None}
        params = {"start_now": "true" if start_now else "false"}
        if files:
            return self._upload("/api/v2/jobs/upload/", body, files, params)
        job: Job = self._json("POST", "/api/v2/jobs/", params=params, json_body=body)
        return job

    def upload(self, pipeline: str | int, files: Sequence[str | os.PathLike[str]], **options: Any) -> Job:
        """Submit a job over local files, uploaded as multipart; ``options`` as for :meth:`submit`."""
        return self.submit(pipeline, files=files, **options)

    def submit_references(self, pipeline: str | int, addresses: Sequence[str], **options: Any) -> Job:
        """Submit a job over ``http(s)://`` URLs and ``s3://`` objects or prefixes (each one
        :func:`reference_input`); ``options`` as for :meth:`submit` (``fetch``, ``output``...)."""
        return self.submit(pipeline, [reference_input(a) for a in addresses], **options)

    def submit_manifest(
        self,
        pipeline: str | int,
        manifest: str | os.PathLike[str],
        *,
        format: ManifestFormat | None = None,
        **options: Any,
    ) -> Job:
        """Submit a job over one manifest: an ``http(s)://`` or ``s3://`` address (listed by the
        job's ``collect`` stage) or a local file (sent inline, see :func:`manifest_file`);
        ``options`` as for :meth:`submit`."""
        if isinstance(manifest, str) and is_reference(manifest):
            spec = manifest_input(manifest, format=format)
        else:
            spec = manifest_file(manifest, format=format)
        return self.submit(pipeline, [spec], **options)

    def _upload(
        self,
        path: str,
        job: Mapping[str, Any] | None,
        files: Sequence[str | os.PathLike[str]],
        params: Mapping[str, Any] | None = None,
    ) -> Job:
        with ExitStack() as stack:
            parts = [
                ("files", (Path(f).name, stack.enter_context(Path(f).open("rb")))) for f in files
            ]  # httpx reads each file in chunks while sending
            try:
                response = self._http.post(
                    path,
                    params=_clean(params),
                    data={"job": json.dumps(job)} if job is not None else None,
                    files=parts,
                )
            except httpx.TransportError as exc:
                raise ConveyorConnectionError(f"Cannot reach Conveyor at {self.url}: {exc}") from exc
        _raise_for_status(response)
        result: Job = response.json()
        return result

    def run(self, job_id: int) -> Job:
        """Queue a CREATED job."""
        job: Job = self._json("POST", f"/api/v2/jobs/{job_id}/run/")
        return job

    def cancel(self, job_id: int) -> Job:
        """Cancel a job: REVOKED at once if nothing runs, else CANCELING until workers stop."""
        job: Job = self._json("POST", f"/api/v2/jobs/{job_id}/cancel/")
        return job

    def retry(self, job_id: int) -> Job:
        """Re-run only the failed items of a finished job (status RETRY)."""
        job: Job = self._json("POST", f"/api/v2/jobs/{job_id}/retry/")
        return job

    def delete(self, job_id: int) -> None:
        """Delete a finished (or never run) job with its items and logs."""
        self._request("DELETE", f"/api/v2/jobs/{job_id}/")

    # ------------------------------------------------------------------ collections
    def create_collection(self, name: str, *, project_id: int | None = None, description: str = "") -> Job:
        """Create an empty collection of stored inputs."""
        body = {"name": name, "project_id": project_id, "description": description}
        collection: Job = self._json(
            "POST", "/api/v2/collections/", json_body={k: v for k, v in body.items() if v is not None}
        )
        return collection

    def add_to_collection(self, collection_id: int, inputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Store inputs (text, bytes, URL or S3 builders) in a collection: ``{added, ids, collection}``."""
        body = {"inputs": [{k: v for k, v in i.items() if v is not None} for i in inputs]}
        added: dict[str, Any] = self._json(
            "POST", f"/api/v2/collections/{collection_id}/items/", json_body=body
        )
        return added

    def upload_to_collection(
        self, collection_id: int, files: Sequence[str | os.PathLike[str]]
    ) -> dict[str, Any]:
        """Upload local files into a collection (multipart, streamed from disk)."""
        return self._upload(f"/api/v2/collections/{collection_id}/items/upload/", None, files)

    def collections(self, *, project: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Collections the key can see (the first ``limit``), newest first."""
        page = self._json("GET", "/api/v2/collections/", params={"project": project, "limit": limit})
        results: list[dict[str, Any]] = page["results"]
        return results

    def get_collection(self, collection_id: int) -> dict[str, Any]:
        collection: dict[str, Any] = self._json("GET", f"/api/v2/collections/{collection_id}/")
        return collection

    def iter_collection_items(self, collection_id: int, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every stored item of the collection (descriptors, not bytes), oldest first."""
        after = 0
        while True:
            page = self._json(
                "GET",
                f"/api/v2/collections/{collection_id}/items/",
                params={"after": after, "limit": page_size},
            )
            yield from page["results"]
            if not page["next"]:
                return
            after = page["results"][-1]["id"]

    def delete_collection(self, collection_id: int) -> None:
        """Delete a collection and its items (409 while an unfinished job runs over it)."""
        self._request("DELETE", f"/api/v2/collections/{collection_id}/")

    # ------------------------------------------------------------------ jobs: reads
    def get_job(self, job_id: int) -> Job:
        """One job with counters, progress (``progress.summary``, ``progress.stages``) and timings."""
        job: Job = self._get_revalidated(f"/api/v2/jobs/{job_id}/")
        return job

    def list_jobs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        project: int | None = None,
        job_type_key: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        updated_after: datetime | str | None = None,
        updated_before: datetime | str | None = None,
        search: str | None = None,
        submitted_by: str | None = None,
        ordering: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of the job history: ``{"count", "next", "previous", "results"}``.

        ``status`` takes a state (``SUCCESS``), a group (``pending``, ``terminated``,
        ``timedout``, ``all``) or a comma-separated mix; ``ordering`` is one of
        ``created_at, updated_at, status, duration, name, id`` (``-`` for descending).
        Follow ``next`` with :func:`cursor_of` or use :meth:`iter_jobs`.
        """
        params = {
            "status": status,
            "pipeline": pipeline,
            "project": project,
            "job_type_key": job_type_key,
            "created_after": created_after,
            "created_before": created_before,
            "updated_after": updated_after,
            "updated_before": updated_before,
            "search": search,
            "submitted_by": submitted_by,
            "ordering": ordering,
            "limit": limit,
            "offset": offset,
            "cursor": cursor,
        }
        page: dict[str, Any] = self._get_revalidated("/api/v2/jobs/", params)
        return page

    def iter_jobs(self, *, page_size: int = 200, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters`` (as :meth:`list_jobs`), page after page by cursor."""
        filters.pop("cursor", None)
        filters.pop("offset", None)
        cursor: str | None = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor, **filters)
            yield from page["results"]
            cursor = cursor_of(page.get("next"))
            if cursor is None:
                return

    def items(
        self, job_id: int, *, status: str | None = None, after: int = -1, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of the job's items (``seq`` greater than ``after``), with result and error."""
        page: dict[str, Any] = self._get_revalidated(
            f"/api/v2/jobs/{job_id}/items/", {"status": status, "after": after, "limit": limit}
        )
        return page

    def sample(self, job_id: int, item_id: int) -> bytes:
        """The item's thumbnail (JPEG) made for image inputs of image classifiers."""
        return self._request("GET", f"/api/v2/jobs/{job_id}/items/{item_id}/sample").content

    def explanation(self, job_id: int, item_id: int) -> bytes:
        """The item's explanation file (a saliency PNG) of a job submitted with ``explain=True``."""
        return self._request("GET", f"/api/v2/jobs/{job_id}/items/{item_id}/explanation").content

    def iter_items(self, job_id: int, *, status: str | None = None, page_size: int = 1000) -> Iterator[Job]:
        """Every item of the job, in ``seq`` order."""
        after = -1
        while True:
            page = self.items(job_id, status=status, after=after, limit=page_size)
            yield from page["results"]
            if not page["results"] or page.get("next") is None:
                return
            after = page["results"][-1]["seq"]

    def logs(
        self, job_id: int, *, after: int = 0, level: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """Log lines with an id greater than ``after``: ``{"results", "last_id", "next"}``.

        To follow a running job, pass the returned ``last_id`` as ``after`` next time.
        ``level`` is the minimum level (DEBUG, INFO, WARNING, ERROR).
        """
        page: dict[str, Any] = self._json(
            "GET", f"/api/v2/jobs/{job_id}/logs/", params={"after": after, "level": level, "limit": limit}
        )
        return page

    def transitions(self, job_id: int) -> list[dict[str, Any]]:
        """Every status change of the job with its time and cause."""
        events: list[dict[str, Any]] = self._json("GET", f"/api/v2/jobs/{job_id}/transitions/")
        return events

    # ------------------------------------------------------------------ results
    def stream_results(
        self, job_id: int, format: ExportFormat = "json", *, chunk_size: int = 64 * 1024
    ) -> Iterator[bytes]:
        """The results export exactly as the server streams it (JSON array, JSON Lines or CSV).

        Nothing is held in memory beyond one chunk: write the pieces to a file or a pipe.
        Errors (404, 401...) are raised before the first chunk.
        """
        with self._stream(f"/api/v2/jobs/{job_id}/results/", {"format": format}) as response:
            yield from response.iter_bytes(chunk_size)

    def create_export(
        self, job_ids: Sequence[int], format: ExportFormat = "csv", *, name: str | None = None
    ) -> Job:
        """Queue a ``data_export`` job writing these jobs' finished results into one file."""
        body: dict[str, Any] = {"job_ids": list(job_ids), "format": format}
        if name is not None:
            body["name"] = name
        job: Job = self._json("POST", "/api/v2/exports/", json_body=body)
        return job

    def stream_export(self, job_id: int, *, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """A succeeded data_export job's file, as the server streams it (409 before it succeeded)."""
        with self._stream(f"/api/v2/jobs/{job_id}/export/", {}) as response:
            yield from response.iter_bytes(chunk_size)

    def iter_results(self, job_id: int) -> Iterator[dict[str, Any]]:
        """Each finished item's row, parsed as it streams in: ``job_id, item_id, seq, name, source,
        status, result, error, duration_ms``."""
        with self._stream(f"/api/v2/jobs/{job_id}/results/", {"format": "jsonl"}) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def results(self, job_id: int) -> list[dict[str, Any]]:
        """Every finished item's row, as a list (use :meth:`iter_results` for big jobs)."""
        return list(self.iter_results(job_id))

    # ------------------------------------------------------------------ catalog and operations
    def pipelines(self) -> list[dict[str, Any]]:
        """Pipelines installed on the server: slug, version, input kinds, stages, batch size."""
        found: list[dict[str, Any]] = self._json("GET", "/api/v2/pipelines/")
        return found

    # ------------------------------------------------------------------ processing services
    def processing_services(self) -> list[dict[str, Any]]:
        """Remote processing services of the key's account, their pipelines and last health check."""
        found: list[dict[str, Any]] = self._json("GET", "/api/v2/processing-services/")
        return found

    def register_service(
        self, endpoint_url: str, *, name: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Register a service speaking Antenna's protocol; its pipelines become ``remote:<name>/<slug>``."""
        body = {"endpoint_url": endpoint_url, "name": name, "description": description}
        service: dict[str, Any] = self._json(
            "POST", "/api/v2/processing-services/", json_body={k: v for k, v in body.items() if v is not None}
        )
        return service

    def refresh_service(self, service_id: int) -> dict[str, Any]:
        """Check a service's health again and pick up its current pipelines."""
        service: dict[str, Any] = self._json("POST", f"/api/v2/processing-services/{service_id}/refresh/")
        return service

    def remove_service(self, service_id: int) -> None:
        """Forget a service: its pipelines take no new jobs."""
        self._request("DELETE", f"/api/v2/processing-services/{service_id}/")

    def projects(self) -> list[dict[str, Any]]:
        """Projects this key can see."""
        found: list[dict[str, Any]] = self._json("GET", "/api/v2/projects/")
        return found

    def workers(
        self, *, kind: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Every worker this key sees (the deployment's local and Celery workers, the account's
        HTTP and pull workers): kind, name, host, pipelines, state (active, idle, lost, stopped),
        last seen, current job, items done. Most recently seen first."""
        params = {"kind": kind, "state": state, "limit": limit}
        found: list[dict[str, Any]] = self._json(
            "GET", "/api/v2/workers/", params={k: v for k, v in params.items() if v is not None}
        )
        return found

    def worker_pool(self) -> list[dict[str, Any]]:
        """The answering server's local worker pool: each slot's pid, liveness, restarts."""
        found: list[dict[str, Any]] = self._json("GET", "/api/v2/workers/pool/")
        return found

    def ready(self) -> bool:
        """Whether ``/readyz`` says the database and the workers are up (no key needed)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    # ------------------------------------------------------------------ waiting
    def wait(
        self,
        job_id: int,
        *,
        on_update: Callable[[Job], None] | None = None,
        poll: float = 0.2,
        timeout: float | None = None,
    ) -> Job:
        """Poll the job until it is finished and return it.

        ``on_update`` is called with the job after every poll (the last call sees the final
        state). ``timeout`` is in seconds; past it :class:`TimeoutError` is raised (the job
        keeps running on the server).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if is_terminal(job):
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} is still {job['status']} after {timeout} s.")
            time.sleep(poll)


# --------------------------------------------------------------------------- helpers
def _default_name(pipeline: str | int, inputs: Sequence[dict[str, Any]], files: Sequence[Any]) -> str:
    """``digits: 3 input(s)``; a job over one prefix or manifest address is named after it (its
    inputs are counted only once listed)."""
    if len(inputs) == 1 and not files:
        data = inputs[0].get("data")
        listed = inputs[0].get("kind") == "manifest" or (
            inputs[0].get("kind") == "s3" and str(data).endswith("/")
        )
        if listed and isinstance(data, str) and is_reference(data):
            return f"{pipeline}: {data}"[:500]
    return f"{pipeline}: {len(inputs) + len(files)} input(s)"


def cursor_of(link: str | None) -> str | None:
    """The ``cursor`` parameter of a ``next``/``previous`` link (None if absent)."""
    if not link:
        return None
    values = parse_qs(urlsplit(link).query).get("cursor")
    return values[0] if values else None


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Drop unset parameters and put datetimes and booleans the way the API reads them."""
    if params is None:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = value
    return out


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    code, message, detail = f"http_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    else:
        if isinstance(body, dict):
            code = str(body.get("error") or code)
            message = str(body.get("message") or body.get("detail") or message)
            detail = body.get("detail")
    raise ConveyorAPIError(response.status_code, code, message or f"HTTP {response.status_code}", detail)
