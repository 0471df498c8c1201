"""Typed settings, read once from the environment (prefix ``CONVEYOR_``)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: CONVEYOR_DEVICE's values (resolved against the installed torch in ``pipelines/torch_runtime.py``).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./conveyor-data"), description="Where the SQLite file, models and blobs live."
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    broker_url: str | None = Field(default=None, description="Celery broker URL (distributed mode only).")
    queue: str = Field(
        default="conveyor",
        min_length=1,
        description="Celery queue that chunk tasks are published to and `conveyor worker` consumes.",
    )

    # Execution
    chunk_size: int = Field(
        default=1000, ge=1, description="Most items in one chunk (the unit a worker claims)."
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A chunk whose lease is not renewed for this long is re-queued."
    )
    heartbeat_seconds: float | None = Field(
        default=None, description="Lease renewal period; default lease/3 (at most 1 s)."
    )
    flush_seconds: float = Field(
        default=0.25, gt=0, description="Longest time a worker holds finished results before writing them."
    )
    sweep_seconds: float = Field(
        default=0.25, gt=0, description="Period of the server's sweeper (lease expiry, timeouts, cancels)."
    )
    cancel_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A CANCELING job becomes REVOKED after this even if a worker is unresponsive.",
    )
    default_max_failed_ratio: float = Field(default=0.5, ge=0, le=1)
    warm_models: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Pipelines (models) a worker process keeps loaded; the least recently used is evicted.",
    )
    model_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of a worker process's model (torch intra-op threads); default: the "
        "host's CPU count divided by its worker processes, at least 1.",
    )
    device: str = Field(
        default="auto",
        description="Where the torch pipelines (imagenet-classifier, text-embedding) run: `auto` (CUDA "
        "when torch sees a GPU, else the CPU), `cpu`, `cuda` or `cuda:N`. An explicit `cuda` on a "
        "machine without a usable GPU fails the model's load with the reason (no silent CPU fallback).",
    )

    # Input caps (a request over any of them gets 413, nothing is stored)
    max_inputs_per_job: int = Field(default=1_000_000, ge=1)
    max_input_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_job_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Cap of the bytes one job's inputs bring with the request (inline, uploads); "
        "default: none, the blob store's disk and the per-request cap are the limits.",
    )
    max_request_bytes: int = Field(default=768 * 1024 * 1024, ge=1)
    max_form_field_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Cap of a non-file field (the job JSON) of an upload."
    )

    # Bytes that arrive with a request (inline base64, uploads, Modzy chunks) go to the blob store;
    # items keep only a ref, size and sha256 (conveyor.blobs).
    blob_url: str | None = Field(
        default=None,
        description="Blob store: `file:///path` or `s3://bucket/prefix` (distributed mode: every "
        "worker must reach it); default: file:// under data_dir/blobs.",
    )
    blob_inline_bytes: int = Field(
        default=1024,
        ge=0,
        description="Inline inputs up to this many bytes stay in the item row instead of the blob store.",
    )

    # Inputs given by reference: checked at submit, listed by the `collect` stage, fetched by workers
    # (see conveyor.inputs and conveyor.worker.fetching).
    fetch_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Inputs a worker process fetches at once ahead of its model (bounded prefetch).",
    )
    fetch_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries of a fetch that failed on a connection error, timeout, 429 or 5xx "
        "(exponential backoff); then the item fails with `input_unavailable`.",
    )
    fetch_backoff_seconds: float = Field(
        default=0.25, ge=0, description="First fetch retry's wait; it doubles per retry, capped at 10 s."
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let URL inputs reach loopback, private, link-local and multicast addresses.",
    )
    url_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect/read timeout and whole-download deadline of a URL input."
    )
    url_max_redirects: int = Field(default=5, ge=0, description="Most redirects a URL input may follow.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (MinIO, moto, ...); default: AWS for the region."
    )
    s3_region: str | None = Field(default=None, description="S3 region; default: boto3's own lookup.")
    s3_access_key_id: str | None = Field(default=None, description="Default: boto3's credential chain.")
    s3_secret_access_key: str | None = Field(default=None)
    s3_max_objects_per_prefix: int = Field(
        default=10_000,
        ge=1,
        description="Most objects one `s3://bucket/prefix/` input may expand to with `fetch: at_submit` "
        "(by reference, the collect stage lists any number, up to CONVEYOR_MAX_INPUTS_PER_JOB).",
    )

    # Job outputs (conveyor.outputs): finished items as sharded JSONL to s3:// or file://.
    output_file_root: Path | None = Field(
        default=None,
        description="`file://` job outputs must be under this directory (API users cannot write "
        "elsewhere on the server); default: data_dir/outputs.",
    )

    modzy_chunk_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Chunk size advertised to Modzy clients for file inputs (`GET /api/jobs/features`).",
    )

    # Per-key quotas (0 = off): over one, a submission gets 429 with Retry-After.
    quota_jobs_per_minute: int = Field(default=0, ge=0, description="Jobs one key may submit per minute.")
    quota_concurrent_jobs: int = Field(
        default=0, ge=0, description="Unfinished jobs (CREATED/OPEN included) one key may have at once."
    )
    quota_input_bytes_per_minute: int = Field(
        default=0, ge=0, description="Input bytes one key may submit per minute."
    )

    # Serving
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    history_exact_count_limit: int = Field(
        default=1000,
        ge=0,
        description="History counts are exact up to this many matching jobs; beyond it they are estimates "
        "(PostgreSQL: the planner's; SQLite: an exact count cached per filter) and `count_exact` is false.",
    )
    history_count_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long SQLite reuses a history count beyond the exact limit."
    )
    job_log_lines_in_detail: int = Field(
        default=50, ge=0, description="Latest log lines embedded in a job's detail."
    )
    events_poll_seconds: float = Field(
        default=0.25, gt=0, description="Period of the live event hub's read of the change feed (SSE)."
    )
    cors_origins: str = Field(
        default="",
        description="Origins (comma-separated, `*` for any) whose browser pages may call the API "
        "cross-origin (CORS); default: none, same-origin only.",
    )
    public_url: str | None = Field(
        default=None, description="Base URL used in `details` links; default: from the request."
    )

    # Remote processing services (Antenna's protocol; see conveyor.pipelines.remote)
    remote_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect timeout of calls to a processing service."
    )
    remote_read_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Read timeout of a processing service's answer to one batch."
    )
    remote_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries of a batch a processing service could not take (connection error, timeout, "
        "429, 502-504), with exponential backoff; then its items fail with the reason.",
    )
    remote_backoff_seconds: float = Field(
        default=0.5, ge=0, description="First retry's wait; it doubles per retry, capped at 30 s."
    )
    media_base_url: str | None = Field(
        default=None,
        description="Base URL at which processing services fetch item images from this server; default: "
        "`public_url`, else (embedded mode) the address `conveyor serve` listens on.",
    )
    media_url_seconds: float = Field(
        default=3600.0, gt=0, description="Lifetime of the signed image URLs sent to processing services."
    )
    pull_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Antenna pull workers (async_api): a task reserved through /tasks/ and not answered "
        "within this many seconds is offered again (Antenna's ack_wait setting).",
    )
    pull_max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Antenna pull workers: after this many unanswered deliveries an item fails "
        '("no worker answered after N deliveries") so the job always ends.',
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        """A typo (``gpu``, ``cuda1``) stops the process at start-up instead of at the first job."""
        device = value.strip().lower()
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError(
                f"CONVEYOR_DEVICE must be auto, cpu, cuda or cuda:N (N a GPU index), not {value!r}."
            )
        return device

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'conveyor.db').resolve()}"

    @property
    def resolved_output_file_root(self) -> Path:
        return self.output_file_root if self.output_file_root is not None else self.data_dir / "outputs"

    @property
    def job_bytes_cap(self) -> int:
        """``max_job_bytes``, or no practical cap when it is unset."""
        return self.max_job_bytes if self.max_job_bytes is not None else 2**62

    @property
    def resolved_heartbeat_seconds(self) -> float:
        if self.heartbeat_seconds:
            return self.heartbeat_seconds
        return min(1.0, self.lease_seconds / 3)

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
