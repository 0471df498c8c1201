"""Remote processing services: pipelines that run on another HTTP service (Antenna's protocol).

A processing service answers ``GET /info`` (its pipelines), ``GET /livez``, ``GET /readyz`` and
``POST /process`` with ``{"pipeline": slug, "source_images": [{"id", "url"}], "config": {...}}``,
returning ``{"source_images": [...], "detections": [{"source_image_id", "bbox",
"classifications": [...]}, ...]}``. Once registered under a name, each of its pipelines is
``remote:<name>/<slug>`` in Conveyor: jobs use it like an installed pipeline, and workers send
each batch of images to the service as signed URLs it downloads from this server.

Calls have connect and read timeouts and bounded retries with exponential backoff (connection
errors, timeouts, 429, 502, 503, 504). A batch the service refuses (another 4xx or a 500) is
split and sent one image at a time, so one bad image fails alone with the service's message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor import media
from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.errors import InvalidInput, UnknownPipeline
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline
from conveyor.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "remote:"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
DEFAULT_BATCH_SIZE = 8
MAX_ERROR_CHARS = 500


class ServiceError(Exception):
    """A processing service could not process a request; ``retryable`` if trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class Stopped(Exception):
    """The job stopped (cancel, timeout, shutdown) while a call was waiting to be retried."""


def is_remote(slug: str) -> bool:
    return slug.startswith(PREFIX)


def remote_slug(service_name: str, pipeline_slug: str) -> str:
    return f"{PREFIX}{service_name}/{pipeline_slug}"


def split_slug(slug: str) -> tuple[str, str]:
    """``remote:<service>/<pipeline>`` -> (service, pipeline); a 400 when it is not that shape."""
    service, sep, pipeline = slug.removeprefix(PREFIX).partition("/")
    if not slug.startswith(PREFIX) or not sep or not service or not pipeline:
        raise InvalidInput(f"Remote pipelines are named remote:<service>/<pipeline>, not {slug!r}.")
    return service, pipeline


def slugify(text: str) -> str:
    """A service name from free text (its /info name): lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return slug or "service"


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and "detail" in body:  # FastAPI's error shape, which Antenna's services use
        body = body["detail"]
    text = body if isinstance(body, str) else str(body)
    return text[:MAX_ERROR_CHARS]


class ServiceClient:
    """HTTP calls to one processing service, with the configured timeouts and retries."""

    def __init__(self, endpoint_url: str, settings: Settings) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.retries = settings.remote_retries
        self.backoff = settings.remote_backoff_seconds
        self.http = httpx.Client(
            base_url=self.endpoint_url,
            timeout=httpx.Timeout(
                settings.remote_read_timeout_seconds,
                connect=settings.remote_connect_timeout_seconds,
                pool=settings.remote_connect_timeout_seconds,
            ),
            follow_redirects=False,
            headers={"User-Agent": "Conveyor processing-service client"},
        )

    def close(self) -> None:
        self.http.close()

    def _once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceError(
                f"{self.endpoint_url}{path} timed out ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"{self.endpoint_url}{path} could not be reached: {exc}", retryable=True
            ) from None
        if response.status_code >= 400:
            raise ServiceError(
                f"{self.endpoint_url}{path} answered {response.status_code}: {_error_text(response)}",
                retryable=response.status_code in RETRYABLE_STATUS,
                status=response.status_code,
            )
        return response

    def call(
        self,
        method: str,
        path: str,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_retry: Callable[[int, ServiceError, float], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The JSON answer, after up to ``retries`` retries of retryable failures."""
        attempt = 0
        while True:
            try:
                response = self._once(method, path, **kwargs)
                try:
                    return response.json()
                except ValueError:
                    raise ServiceError(
                        f"{self.endpoint_url}{path} answered with something that is not JSON", retryable=False
                    ) from None
            except ServiceError as exc:
                if not exc.retryable or attempt >= self.retries:
                    if attempt:
                        raise ServiceError(
                            f"{exc} (gave up after {attempt + 1} attempts)",
                            retryable=False,
                            status=exc.status,
                        ) from None
                    raise
                wait = min(MAX_BACKOFF_SECONDS, self.backoff * 2**attempt)
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    if should_stop():
                        raise Stopped(str(exc)) from None
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def info(self) -> dict[str, Any]:
        body = self.call("GET", "/info")
        return parse_info(body, self.endpoint_url)

    def health(self) -> dict[str, Any]:
        """``live``/``ready`` from /livez and /readyz (one attempt each), the latency, and the error."""
        started = time.perf_counter()
        state: dict[str, Any] = {"live": False, "ready": False, "last_error": None}
        try:
            self._once("GET", "/livez")
            state["live"] = True
            self._once("GET", "/readyz")
            state["ready"] = True
        except ServiceError as exc:
            state["last_error"] = str(exc)
        state["latency_ms"] = round((time.perf_counter() - started) * 1000)
        return state


def _stages(entry: dict[str, Any]) -> list[dict[str, str]]:
    stages = [
        {"key": str(s["key"]), "name": str(s.get("name") or s["key"])}
        for s in entry.get("stages") or []
        if isinstance(s, dict) and s.get("key")
    ]
    return stages or [{"key": "process", "name": "Process"}]


def parse_info(body: Any, where: str) -> dict[str, Any]:
    """The parts of a GET /info answer Conveyor uses; a clear error when it is not that shape."""
    if not isinstance(body, dict) or not isinstance(body.get("pipelines"), list):
        raise ServiceError(
            f"{where}/info is not a processing-service description (no pipelines list)", retryable=False
        )
    pipelines: list[dict[str, Any]] = []
    for entry in body["pipelines"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("slug"), str) or not entry["slug"]:
            raise ServiceError(
                f"{where}/info lists a pipeline without a slug: {str(entry)[:200]}", retryable=False
            )
        version = entry.get("version", 1)
        pipelines.append(
            {
                "slug": entry["slug"][:150],
                "name": str(entry.get("name") or entry["slug"])[:200],
                "description": str(entry.get("description") or ""),
                "version": version if isinstance(version, int) and not isinstance(version, bool) else 1,
                "version_name": str(entry.get("version_name") or "")[:100],
                "stages": _stages(entry),
                "algorithms": [
                    {"key": a.get("key"), "name": a.get("name"), "task_type": a.get("task_type")}
                    for a in entry.get("algorithms") or []
                    if isinstance(a, dict)
                ],
            }
        )
    return {
        "name": str(body.get("name") or ""),
        "description": str(body.get("description") or ""),
        "pipelines": pipelines,
    }


def describe_rows(service_name: str, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Pipeline rows (as the registry's ``describe``) for each pipeline of a service."""
    return [
        {
            "slug": remote_slug(service_name, p["slug"]),
            "name": p["name"],
            "description": p["description"],
            "version": p["version"],
            "version_name": p["version_name"],
            "input_kinds": list(RemotePipeline.input_kinds),
            "stages": p["stages"],
            "image_classification_model": True,
            "supports_explain": False,
            "batch_size": DEFAULT_BATCH_SIZE,
        }
        for p in info["pipelines"]
    ]


def resolve(
    slug: str, find_service: Callable[[str], Mapping[Any, Any] | None]
) -> tuple[type[RemotePipeline], Mapping[Any, Any]]:
    """The one resolver of ``remote:<service>/<pipeline>``: its Pipeline class and its service's row.

    ``find_service`` looks the service up by name (a submission: among the account's services; a
    worker: among all). UnknownPipeline when the service or its pipeline is not registered.
    """
    service_name, pipeline_slug = split_slug(slug)
    row = find_service(service_name)
    if row is None:
        raise UnknownPipeline(
            f"Unknown pipeline {slug!r}: no processing service named {service_name!r} is registered.",
            pipeline=slug,
        )
    for pipeline in row["info"]["pipelines"]:
        if pipeline["slug"] == pipeline_slug:
            return pipeline_class(row, pipeline), row
    offered = ", ".join(p["slug"] for p in row["info"]["pipelines"]) or "none"
    raise UnknownPipeline(
        f"Processing service {service_name!r} has no pipeline {pipeline_slug!r} (it offers: {offered}); "
        "refresh the service if it changed.",
        pipeline=slug,
    )


def pipeline_class(service: Any, pipeline: dict[str, Any]) -> type[RemotePipeline]:
    """A Pipeline class for one pipeline of a registered service (what submission validates with)."""
    attrs = {
        "slug": remote_slug(service["name"], pipeline["slug"]),
        "name": pipeline["name"],
        "description": pipeline["description"],
        "version": pipeline["version"],
        "version_name": pipeline["version_name"],
        "stages": tuple(StageDef(s["key"], s["name"]) for s in pipeline["stages"]),
        "remote_pipeline": pipeline["slug"],
    }
    return type(f"Remote_{service['name']}_{pipeline['slug']}", (RemotePipeline,), attrs)


@dataclass(frozen=True)
class Endpoint:
    """Where a worker sends a remote pipeline's batches, and how it signs the image URLs."""

    url: str
    media_base_url: str | None
    media_secret: str


class RemotePipeline(Pipeline):
    """Sends batches of images to a processing service; one instance per worker and service URL."""

    slug = "remote"
    name = "Remote pipeline"
    input_kinds = ("base64",)
    batch_size = DEFAULT_BATCH_SIZE
    image_classification_model = True
    remote_pipeline = ""

    def __init__(self, endpoint: Endpoint, settings: Settings) -> None:
        super().__init__(settings.data_dir)
        self.endpoint = endpoint
        self.settings = settings
        self.client = ServiceClient(endpoint.url, settings)

    def close(self) -> None:
        self.client.close()

    def _source_images(self, batch: list[ItemInput]) -> list[dict[str, str]]:
        base = self.endpoint.media_base_url
        if not base:
            raise RuntimeError(
                "this worker does not know the URL at which the processing service can fetch images: "
                "set CONVEYOR_MEDIA_BASE_URL (or CONVEYOR_PUBLIC_URL) for the workers"
            )
        ttl = self.settings.media_url_seconds
        return [
            {"id": str(item.id), "url": media.signed_url(base, self.endpoint.media_secret, item.id, ttl)}
            for item in batch
        ]

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        config = {k: v for k, v in ctx.config.items() if k != "batch_size"}
        try:
            return self._send(batch, config, ctx)
        except ServiceError as exc:
            if exc.retryable or exc.status is None or len(batch) == 1:
                return [ItemResult.failure(str(exc))] * len(batch)
        # The service refused the batch: find which images it refuses, one at a time.
        ctx.log("WARNING", f"{self.slug} refused a batch of {len(batch)}; sending its images one by one")
        results: list[ItemResult] = []
        for item in batch:
            try:
                results.extend(self._send([item], config, ctx))
            except ServiceError as exc:
                results.append(ItemResult.failure(str(exc)))
        return results

    def _send(self, batch: list[ItemInput], config: dict[str, Any], ctx: BatchContext) -> list[ItemResult]:
        def on_retry(attempt: int, exc: ServiceError, wait: float) -> None:
            ctx.log(
                "WARNING", f"{self.slug}: {exc}; retry {attempt} of {self.client.retries} in {wait:.1f} s"
            )

        body = self.client.call(
            "POST",
            "/process",
            json={
                "pipeline": self.remote_pipeline,
                "source_images": self._source_images(batch),
                "config": config,
            },
            should_stop=ctx.should_stop,
            on_retry=on_retry,
        )
        return results_of(batch, body)


def results_of(batch: list[ItemInput], body: Any) -> list[ItemResult]:
    """One result per item from a /process answer: the detections of its source image."""
    if not isinstance(body, dict):
        raise ServiceError("the processing service's answer is not a JSON object", retryable=False)
    detections = body.get("detections") or []
    returned = {str(s.get("id")) for s in body.get("source_images") or [] if isinstance(s, dict)}
    by_image: dict[str, list[Any]] = {}
    for detection in detections if isinstance(detections, list) else []:
        if isinstance(detection, dict):
            by_image.setdefault(str(detection.get("source_image_id")), []).append(detection)
    results: list[ItemResult] = []
    for item in batch:
        key = str(item.id)
        if key not in returned and key not in by_image:
            results.append(ItemResult.failure("the processing service returned no result for this image"))
            continue
        found = by_image.get(key, [])
        results.append(
            ItemResult.success(
                {
                    "detections": found,
                    "labels": _top_labels(found),
                    "total_time": body.get("total_time"),
                }
            )
        )
    return results


def _top_labels(detections: list[Any]) -> list[str]:
    """The terminal classification label of each detection (what a gallery shows)."""
    labels: list[str] = []
    for detection in detections:
        classifications = [c for c in detection.get("classifications") or [] if isinstance(c, dict)]
        terminal = [c for c in classifications if c.get("terminal", True)] or classifications
        if terminal and isinstance(terminal[-1].get("classification"), str):
            labels.append(terminal[-1]["classification"])
    return labels


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"A processing service name is 1-63 lowercase letters, digits and dashes, starting with a "
            f"letter or digit; {name!r} is not.",
            name=name,
        )
    return name
