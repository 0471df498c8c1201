"""The wire of HTTP workers (``/api/v2/workers/leases/``): lease, heartbeat, results, release.

Bounded like every body: a malformed or oversized post is a 422 and writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from conveyor.api.schemas.common import DB_INT32_MAX, DB_INT_MAX

Token = Annotated[str, Field(min_length=1, max_length=64, description="The lease token of the chunk.")]
#: Most outcomes, logs and artifacts per post (a chunk holds at most CONVEYOR_CHUNK_SIZE items).
MAX_OUTCOMES = 100_000
MAX_LOGS = 10_000
MAX_ARTIFACT_B64 = 16 * 1024 * 1024


class LeaseTerms(BaseModel):
    lease_seconds: float = Field(description="A lease not renewed for this long is handed to another worker.")
    heartbeat_seconds: float = Field(description="Renew the lease this often.")
    flush_seconds: float = Field(description="Post finished items at least this often within a chunk.")
    media_url_seconds: float = Field(description="How long a leased item's `media_path` stays valid.")


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipelines: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1,
        max_length=200,
        description="Slugs of the pipelines this worker runs; only item chunks of these (local "
        "pipelines, not `remote:` ones or data exports) are leased.",
    )
    name: str = Field(
        min_length=1, max_length=150, description="The worker's name (`--name`), shown as the holder."
    )
    host: str | None = Field(default=None, max_length=48, description="The worker's host name.")


class LeasedJob(BaseModel):
    id: int
    status: str
    pipeline: str | None
    config: dict[str, Any]
    explain: bool
    deadline_at: datetime | None


class LeasedItemOut(BaseModel):
    id: int
    seq: int
    name: str
    kind: str = Field(description="`text`, `image`, ... as submitted.")
    data_b64: str | None = Field(description="The item's bytes when stored in its row (base64).")
    ref: str | None = Field(description="A public `http(s)://` reference the worker reads itself.")
    media_path: str | None = Field(
        description="For bytes only the server can read (its blob store, collections, S3): a signed "
        "path on this server (`/api/v2/media/items/{id}?expires=…&signature=…`), fetched without a key."
    )
    counts_input_bytes: bool = Field(
        description="Whether the bytes read count as the job's input bytes (send them as `byte_size`); "
        "bytes Conveyor stores itself were counted at submit."
    )


class LeaseOut(BaseModel):
    chunk_id: int
    token: str
    expires_at: datetime
    lease_seconds: float
    heartbeat_seconds: float
    attempt: int = Field(description="1 for a chunk's first delivery.")
    job: LeasedJob
    items: list[LeasedItemOut] = Field(
        description="The chunk's items not written back yet (a redelivered chunk: only what is left)."
    )


class LeaseAnswer(BaseModel):
    lease: LeaseOut | None = Field(description="null: nothing queued for these pipelines now; poll again.")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token


class JobState(BaseModel):
    status: str
    deadline_at: datetime | None


class HeartbeatOut(BaseModel):
    held: bool = Field(description="false: the lease was lost (expired and re-leased); stop, post nothing.")
    job: JobState | None = Field(
        description="The job's state: stop when it is no longer runnable or past its deadline."
    )


class ArtifactIn(TypedDict):
    """An artifact of an item: a thumbnail (``sample``) or an explanation, base64."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    kind: Literal["sample", "explanation"]
    media_type: Annotated[str, Field(min_length=1, max_length=100)]
    data_b64: Annotated[str, Field(min_length=1, max_length=MAX_ARTIFACT_B64)]


class OutcomeIn(TypedDict):
    """One finished item. A TypedDict, not a model: a post carries a chunk's worth of them, and
    validating plain dicts is several times faster than building model instances."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    id: Annotated[
        int, Field(ge=1, le=DB_INT_MAX, description="An item id of this chunk (others are ignored).")
    ]
    ok: bool
    result: NotRequired[Annotated[Any, Field(description="The item's result (JSON).")]]
    error: NotRequired[Annotated[str | None, Field(max_length=20_000)]]
    started_at: NotRequired[AwareDatetime | None]
    finished_at: NotRequired[AwareDatetime | None]
    artifacts: NotRequired[Annotated[list[ArtifactIn], Field(max_length=8)]]
    byte_size: NotRequired[
        Annotated[
            int | None,
            Field(ge=0, le=DB_INT32_MAX, description="Bytes read for an item with `counts_input_bytes`."),
        ]
    ]


class LogIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    message: Annotated[str, Field(min_length=1, max_length=20_000)]
    created_at: NotRequired[AwareDatetime | None]


class StageParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    value: Any


class ResultsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    outcomes: list[OutcomeIn] = Field(default_factory=list, max_length=MAX_OUTCOMES)
    logs: list[LogIn] = Field(default_factory=list, max_length=MAX_LOGS)
    complete: bool = Field(default=False, description="true: the chunk is done (its lease ends).")
    stage_params: dict[Annotated[str, Field(max_length=100)], list[StageParam]] | None = Field(
        default=None,
        max_length=20,
        description="Stage parameters to show on the job (model load time, worker).",
    )


class ResultsOut(BaseModel):
    held: bool = Field(description="false: the lease was lost; nothing was written.")
    job_status: str | None


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    requeue: bool = Field(
        default=True,
        description="true: back to the queue (this worker stops). false: drop it (the job was canceled or "
        "timed out); a chunk of a job still running is re-queued anyway.",
    )
