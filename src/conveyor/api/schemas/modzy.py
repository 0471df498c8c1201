"""Modzy dialect (``/api/``): request bodies, and jobs, results, models and errors as Modzy shapes them.

Field names are Modzy's camelCase; times are ISO 8601 UTC; durations are milliseconds. Where the
published client (``modzy-sdk`` 0.11.6) and Modzy's documentation disagree, the client wins.
Job states are shown by Modzy's status names (``MODZY_STATUS``): a dialect map, kept out of the domain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import RowMapping

from conveyor.clock import isoformat, ms_between, utcnow
from conveyor.domain.status import TERMINAL, JobStatus, resolve_status_filter
from conveyor.errors import InvalidInput
from conveyor.inputs.s3 import S3Credentials
from conveyor.services.submission import InputSpec, JobRequest

# Modzy input types this server reads inline, and the item kind each becomes.
INPUT_KINDS = {"text": "text", "embedded": "base64"}
S3_INPUT_TYPE = "aws-s3"  # sources name objects ({bucket, key}), fetched at submit like native `s3` inputs
OUTPUT_NAME = "results.json"
# Canonical state -> Modzy's status name (the dialect's only view of a job's state).
MODZY_STATUS: dict[JobStatus, str] = {
    JobStatus.CREATED: "OPEN",
    JobStatus.PENDING: "SUBMITTED",
    JobStatus.STARTED: "IN_PROGRESS",
    JobStatus.RETRY: "IN_PROGRESS",
    # Canceled: the job can no longer complete and REVOKED follows (its workers stop within
    # seconds). A Modzy client takes CANCELED as done, as it does IN_PROGRESS as not yet.
    JobStatus.CANCELING: "CANCELED",
    JobStatus.SUCCESS: "COMPLETED",
    JobStatus.FAILURE: "FAILED",
    JobStatus.REVOKED: "CANCELED",
    JobStatus.TIMEDOUT: "TIMEDOUT",
}
# States a Modzy client sees as finished (``finished`` in results, the `terminated` filter): the
# terminal ones and CANCELING, which Modzy shows as CANCELED.
MODZY_FINISHED: frozenset[JobStatus] = TERMINAL | {JobStatus.CANCELING}
MODZY_STATUS_GROUPS: dict[str, frozenset[JobStatus]] = {
    "pending": frozenset(JobStatus) - MODZY_FINISHED,
    "terminated": MODZY_FINISHED,
}
# While queued or running a job's queueTime/elapsedTime grow with the clock (until it finishes).
CLOCKED: frozenset[JobStatus] = frozenset(JobStatus) - TERMINAL - {JobStatus.CREATED}
# Modzy's own status names -> canonical states (the history filter accepts both).
MODZY_STATUS_FILTERS: dict[str, frozenset[JobStatus]] = {}
for _state, _name in MODZY_STATUS.items():
    MODZY_STATUS_FILTERS.setdefault(_name, frozenset())
    MODZY_STATUS_FILTERS[_name] = MODZY_STATUS_FILTERS[_name] | {_state}
# Modzy's sort keys (and the native ones) -> history orderings.
SORT_KEYS = {
    "createdAt": "created_at",
    "submittedAt": "created_at",
    "updatedAt": "updated_at",
    "status": "status",
    "elapsedTime": "duration",
    "name": "name",
    "jobIdentifier": "id",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "duration": "duration",
    "id": "id",
}


# --------------------------------------------------------------------------- requests
class ModelRef(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)
    identifier: str = Field(min_length=1, max_length=200, description="Model identifier (pipeline slug).")
    version: str = Field(min_length=1, max_length=100, description="Model version (pipeline version).")


class JobInput(BaseModel):
    model_config = ConfigDict(extra="allow")  # credentials of other input types are ignored
    type: str = Field(description="`text`, `embedded` (base64 `data:` URIs) or `aws-s3`.")
    sources: dict[str, Any] = Field(
        description="Source (item) name -> {model input name -> value}; one input per source. "
        "For `aws-s3` the value is `{bucket, key}` naming one object."
    )
    access_key_id: str | None = Field(
        default=None,
        alias="accessKeyID",
        max_length=256,
        description="`aws-s3`: the AWS access key id for this job's fetches (with `secretAccessKey`); "
        "without both, the server's own S3 credentials are used.",
    )
    secret_access_key: SecretStr | None = Field(
        default=None,
        alias="secretAccessKey",
        max_length=1024,
        description="`aws-s3`: the AWS secret access key; used for this submission only, never stored.",
    )
    region: str | None = Field(
        default=None, max_length=64, description="`aws-s3`: the AWS region (default: the server's)."
    )

    def s3_credentials(self) -> S3Credentials | None:
        key_id = self.access_key_id or None
        secret = self.secret_access_key.get_secret_value() if self.secret_access_key else None
        if (key_id is None) != (secret is None):
            raise InvalidInput("Give both `accessKeyID` and `secretAccessKey`, or neither.")
        if key_id is None or secret is None:
            return None
        return S3Credentials(key_id, secret, self.region or None)


class ModzyJobCreate(BaseModel):
    """``POST /api/jobs``. Without ``input`` the job is OPEN for chunked file inputs until closed."""

    model: ModelRef
    explain: bool = False
    timeout: int | None = Field(
        default=None, ge=1, le=30 * 86400 * 1000, description="Milliseconds until the job is TIMEDOUT."
    )
    input: JobInput | None = None
    name: str | None = Field(default=None, max_length=500, description="Job name (a Conveyor extension).")

    def to_request(self, pipeline_id: int) -> JobRequest:
        inputs: list[InputSpec] = []
        credentials = None
        if self.input is not None:
            if self.input.type == S3_INPUT_TYPE:
                inputs = list(_s3_inputs(self.input.sources))
                credentials = self.input.s3_credentials()
            elif self.input.type in INPUT_KINDS:
                inputs = list(_inline_inputs(self.input.sources, INPUT_KINDS[self.input.type]))
            else:
                raise InvalidInput(
                    f"Input type {self.input.type!r} is not supported here; use "
                    f"{', '.join([*INPUT_KINDS, S3_INPUT_TYPE])}, or chunked file inputs.",
                    type=self.input.type,
                )
            if not inputs:
                raise InvalidInput("`input.sources` is empty: give at least one source.")
        label = f"{self.model.identifier} {self.model.version}"
        return JobRequest(
            name=self.name or f"Modzy job: {label}",
            inputs=inputs,
            pipeline_id=pipeline_id,
            timeout_ms=self.timeout,
            explain=self.explain,
            s3_credentials=credentials,
        )


def _source_values(sources: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """(source name, its one input value) per source."""
    for source, value in sources.items():
        if not isinstance(value, Mapping) or len(value) != 1:
            raise InvalidInput(
                f"Source {source!r} must map exactly one model input name to its value "
                "(Conveyor pipelines take one input per item).",
                source=source,
            )
        if len(source) > 500:
            raise InvalidInput("Source names are at most 500 characters.")
        ((_, data),) = value.items()
        yield source, data


def _inline_inputs(sources: Mapping[str, Any], kind: str) -> Iterable[InputSpec]:
    for source, data in _source_values(sources):
        if not isinstance(data, str):
            raise InvalidInput(f"Source {source!r}: the input value must be a string.", source=source)
        yield {"kind": kind, "data": data, "name": source}


def _s3_inputs(sources: Mapping[str, Any]) -> Iterable[InputSpec]:
    """``{bucket, key}`` per source -> a native ``s3`` input named after the source.

    A leading ``/`` of the key is dropped (Modzy's examples write keys as paths). Each source is
    one object: a key ending in ``/`` (a prefix) is refused.
    """
    for source, data in _source_values(sources):
        bucket = data.get("bucket") if isinstance(data, Mapping) else None
        key = data.get("key") if isinstance(data, Mapping) else None
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise InvalidInput(
                f"Source {source!r}: an `aws-s3` input needs `bucket`, a bucket name.", source=source
            )
        if not isinstance(key, str) or not key.lstrip("/") or key.endswith("/"):
            raise InvalidInput(
                f"Source {source!r}: an `aws-s3` input needs `key`, the key of one object.", source=source
            )
        yield {"kind": "s3", "data": f"s3://{bucket}/{key.removeprefix('/')}", "name": source}


def history_statuses(value: str) -> frozenset[JobStatus] | None:
    """``all``/``pending``/``terminated``/``timedout``, Modzy names, canonical states (comma-separated)."""
    result: set[JobStatus] = set()
    for raw in value.split(","):
        token = raw.strip()
        if token.lower() in MODZY_STATUS_GROUPS:
            result |= MODZY_STATUS_GROUPS[token.lower()]
        elif token.upper() in MODZY_STATUS_FILTERS:
            result |= MODZY_STATUS_FILTERS[token.upper()]
        elif token:
            result |= resolve_status_filter(token)
    return frozenset(result) if result else None


def ordering(sort_by: str | None, direction: str | None) -> str:
    key = SORT_KEYS.get(sort_by or "createdAt")
    if key is None:
        raise InvalidInput(f"Cannot sort by {sort_by!r}; use one of {', '.join(SORT_KEYS)}.")
    way = (direction or "desc").lower()
    if way not in ("asc", "desc"):
        raise InvalidInput(f"direction must be asc or desc, not {direction!r}.")
    return key if way == "asc" else f"-{key}"


def parse_date(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 date or time, not {value!r}.") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- responses
def present_job(
    row: Mapping[Any, Any],
    *,
    account: str,
    key_names: Mapping[str, str],
    inputs: Sequence[Mapping[Any, Any]],
) -> dict[str, Any]:
    """Every field of Modzy's job object, plus ``name`` and the timestamps it lacks."""
    status = JobStatus(row["status"])
    now = utcnow()
    queue_time = row["queue_time_ms"]
    if queue_time is None and row["submitted_at"] is not None:
        queue_time = ms_between(row["submitted_at"], row["finished_at"] or now)
    elapsed = row["elapsed_time_ms"]
    if elapsed is None and row["started_at"] is not None:
        elapsed = ms_between(row["started_at"], row["finished_at"] or now)
    prefix = row["submitted_by"]
    return {
        "jobIdentifier": row["uuid"],
        "submittedBy": prefix,
        "accountIdentifier": account,
        "model": {
            "identifier": row["pipeline_slug"],
            "version": str(row["pipeline_version"]),
            "name": row["pipeline_name"],
        },
        "status": MODZY_STATUS[status],
        "createdAt": isoformat(row["created_at"]),
        "updatedAt": isoformat(row["updated_at"]),
        "submittedAt": isoformat(row["submitted_at"] or row["created_at"]),
        "startedAt": isoformat(row["started_at"]),
        "finishedAt": isoformat(row["finished_at"]),
        "total": row["total"],
        "pending": row["pending"],
        "completed": row["completed"],
        "failed": row["failed"],
        "elapsedTime": elapsed or 0,
        "queueTime": queue_time or 0,
        "timeout": row["timeout_ms"],
        "explain": row["explain"],
        "user": {"accessKey": prefix, "name": key_names.get(prefix or "", None)},
        "jobInputs": [
            {"identifier": i["name"], "type": i["kind"], "inputByteAmount": i["byte_size"]} for i in inputs
        ],
        "inputByteAmount": row["input_byte_amount"],
        "imageClassificationModel": bool(row["image_classification_model"]),
        "name": row["name"],
        "project": row["project_slug"],
    }


def present_results(row: RowMapping, account: str, items: Iterable[RowMapping]) -> dict[str, Any]:
    """``GET /api/results/{id}``: per-source outputs under ``results``, errors under ``failures``."""
    results: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    latencies: list[int] = []
    for item in items:
        common = {
            "startTime": isoformat(item["started_at"]),
            "endTime": isoformat(item["finished_at"]),
            "updateTime": isoformat(item["finished_at"]),
            "elapsedTime": item["duration_ms"],
            "modelLatency": item["duration_ms"],
            "inputSize": item["byte_size"],
            "engine": "conveyor",
            "attempts": item["attempts"],
        }
        if item["duration_ms"] is not None:
            latencies.append(item["duration_ms"])
        if item["status"] == "SUCCESS":
            results[item["name"]] = {"status": "SUCCESSFUL", **common, OUTPUT_NAME: item["result"]}
        elif item["status"] == "FAILURE":
            failures[item["name"]] = {"status": "FAILED", **common, "error": item["error"]}
    return {
        "jobIdentifier": row["uuid"],
        "accountIdentifier": account,
        "total": row["total"],
        "completed": row["completed"],
        "failed": row["failed"],
        "finished": JobStatus(row["status"]) in MODZY_FINISHED,
        "submittedByKey": row["submitted_by"],
        "explained": row["explain"],
        "submittedAt": isoformat(row["submitted_at"] or row["created_at"]),
        "initialQueueTime": row["queue_time_ms"] or 0,
        "totalQueueTime": row["queue_time_ms"] or 0,
        "averageModelLatency": (sum(latencies) / len(latencies)) if latencies else 0,
        "totalModelLatency": sum(latencies),
        "elapsedTime": row["elapsed_time_ms"] or 0,
        "inputSize": row["input_byte_amount"],
        "results": results,
        "failures": failures,
    }


def present_model(versions: list[RowMapping]) -> dict[str, Any]:
    """A model: one pipeline slug with all its versions (newest last in ``versions``)."""
    latest = versions[-1]
    return {
        "modelId": latest["slug"],
        "identifier": latest["slug"],
        "name": latest["name"],
        "author": "Conveyor",
        "description": latest["description"],
        "latestVersion": str(latest["version"]),
        "latestActiveVersion": str(latest["version"]),
        "versions": [str(v["version"]) for v in versions],
        "isActive": True,
        "isRecommended": False,
        "isCommercial": False,
        "tags": [],
        "imageClassificationModel": bool(latest["image_classification_model"]),
        "features": {"explain": bool(latest["supports_explain"])},
    }


def present_version(row: RowMapping, max_input_bytes: int) -> dict[str, Any]:
    kinds = list(row["input_kinds"])
    media = ["text/plain"] if kinds == ["text"] else ["application/octet-stream"]
    return {
        "version": str(row["version"]),
        "versionName": row["version_name"],
        "model": {"modelId": row["slug"], "identifier": row["slug"], "name": row["name"]},
        "createdAt": isoformat(row["created_at"]),
        "updatedAt": isoformat(row["updated_at"]),
        "status": "active",
        "isActive": True,
        "inputs": [
            {
                "name": "input",
                "acceptedMediaTypes": ", ".join(media),
                "maximumSize": max_input_bytes,
                "description": f"One input per source, of kind {' or '.join(kinds)}.",
            }
        ],
        "outputs": [
            {"name": OUTPUT_NAME, "mediaType": "application/json", "description": "The pipeline's result."}
        ],
        "stages": row["stages"],
        "batchSize": row["batch_size"],
        "explainable": bool(row["supports_explain"]),
        "imageClassificationModel": bool(row["image_classification_model"]),
    }


def error_body(status_code: int, code: str, message: str, detail: object = None) -> dict[str, object]:
    """Modzy's error shape (``statusCode``, ``status``, ``message``) plus Conveyor's code and detail."""
    try:
        phrase = HTTPStatus(status_code).name
    except ValueError:
        phrase = "ERROR"
    return {
        "statusCode": status_code,
        "status": phrase,
        "message": message,
        "error": code,
        "detail": detail or {},
    }


SECRET_FIELDS = frozenset({"secretAccessKey"})


def redact(value: Any) -> Any:
    """``value`` (a validation error's echo of the body) with secrets masked, at any depth."""
    if isinstance(value, Mapping):
        return {k: "**********" if k in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def is_modzy_path(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith("/api/v2")
