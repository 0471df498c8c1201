"""Small helpers for tests that call the native API (``tests/integration/test_api_*.py`` and others).

Every test talks to a real server over HTTP. The shared server keeps its history across
tests, so each test names its jobs with a unique tag and filters the history by it.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import httpx

from tests.helpers import TERMINAL_STATUSES, text_inputs, wait_status

JOBS = "/api/v2/jobs/"
ANTENNA_JOB_KEYS = frozenset(
    {
        "id",
        "details",
        "name",
        "delay",
        "limit",
        "shuffle",
        "project",
        "deployment",
        "source_image_collection",
        "source_image_single",
        "pipeline",
        "status",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "duration",
        "progress",
        "logs",
        "job_type",
        "data_export",
        "dispatch_mode",
        "result",
        "user_permissions",
    }
)
MODZY_JOB_KEYS = frozenset(
    {
        "total",
        "pending",
        "completed",
        "failed",
        "queue_time_ms",
        "elapsed_time_ms",
        "timeout",
        "explain",
        "input_byte_amount",
        "image_classification_model",
        "submitted_by",
        "account",
    }
)
PROJECT_KEYS = frozenset({"id", "name", "details", "user_permissions"})
PIPELINE_KEYS = frozenset(
    {
        "id",
        "details",
        "name",
        "slug",
        "description",
        "version",
        "version_name",
        "created_at",
        "updated_at",
        "user_permissions",
    }
)


def unique(prefix: str = "api") -> str:
    """A job name (or tag) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(
    client: httpx.Client,
    *,
    name: str,
    n: int = 3,
    pipeline: str | None = "test-delay",
    start_now: bool = True,
    **body: Any,
) -> dict[str, Any]:
    """Submit a job (``n`` text inputs unless ``inputs`` is given) and return the 201 body."""
    payload: dict[str, Any] = {"name": name, "inputs": text_inputs(n, prefix="item"), **body}
    if pipeline is not None and "pipeline_id" not in body:
        payload["pipeline"] = pipeline
    url = JOBS + ("?start_now=true" if start_now else "")
    response = client.post(url, json=payload)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def finished(client: httpx.Client, job_id: int, timeout: float = 60) -> dict[str, Any]:
    return wait_status(client, job_id, TERMINAL_STATUSES, timeout)


def get_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    response = client.get(f"{JOBS}{job_id}/")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """A clear JSON error: the expected status and a body with ``error`` and ``message``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def history(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert set(page) >= {"count", "next", "previous", "results"}, page.keys()
    return page


def count_named(client: httpx.Client, name: str) -> int:
    """How many jobs of the caller's history have ``name`` in their name (used for "nothing created")."""
    count: int = history(client, search=name)["count"]
    return count


def all_items(client: httpx.Client, job_id: int, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{JOBS}{job_id}/items/", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next"] is None, "more than one page of items; use a smaller job"
    assert page["count"] == len(page["results"])
    results: list[dict[str, Any]] = page["results"]
    return results


def all_logs(client: httpx.Client, job_id: int, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{JOBS}{job_id}/logs/", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def ts(value: str) -> datetime:
    """Parse an ISO 8601 timestamp and insist it carries a timezone."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None and parsed.utcoffset() is not None, f"naive timestamp {value!r}"
    return parsed
