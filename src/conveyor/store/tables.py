"""The schema (SQLAlchemy Core). Alembic migrations in ``store/migrations`` create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)

from conveyor.domain.status import ACTIVE
from conveyor.store.types import JSONType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Integer primary keys that are BIGINT on PostgreSQL but stay rowid aliases on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("slug", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("account_id", "slug"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("version_name", String(100), nullable=False, default=""),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("input_kinds", JSONType, nullable=False),
    Column("stages", JSONType, nullable=False),
    Column("image_classification_model", Boolean, nullable=False, default=False),
    Column("supports_explain", Boolean, nullable=False, default=False),
    Column("batch_size", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("slug", "version"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(500), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("pipeline_id", Integer, ForeignKey("pipelines.id"), nullable=True),
    Column("job_type", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    Column("dispatch_mode", String(20), nullable=False),
    Column("delay", Float, nullable=False, default=0.0),
    Column("limit", Integer, nullable=True),
    Column("shuffle", Boolean, nullable=False, default=False),
    Column("timeout_ms", BigInteger, nullable=True),
    Column("explain", Boolean, nullable=False, default=False),
    Column("max_failed_ratio", Float, nullable=False),
    Column("config", JSONType, nullable=False),
    Column("input_summary", JSONType, nullable=False),
    Column("total", Integer, nullable=False, default=0),
    Column("pending", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("canceled", Integer, nullable=False, default=0),
    Column("input_byte_amount", BigInteger, nullable=False, default=0),
    Column("submitted_by", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("submitted_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("deadline_at", UTCDateTime, nullable=True),
    Column("cancel_requested_at", UTCDateTime, nullable=True),
    Column("queue_time_ms", BigInteger, nullable=True),
    Column("elapsed_time_ms", BigInteger, nullable=True),
    Column("delay_progress", Float, nullable=False, default=0.0),
    Column("stage_params", JSONType, nullable=False),
    Column("result", JSONType, nullable=True),
    # What the job ran over when it came from stored inputs (migration 0005): the collection's
    # id (to refuse deleting a collection under a running job) and snapshots for presentation.
    Column("source_collection_id", Integer, nullable=True),
    Column("source_collection", JSONType, nullable=True),
    Column("source_item", JSONType, nullable=True),
    # Inputs by reference (migration 0009): what the `collect` stage still has to list (S3
    # prefixes, manifests) and how far it got; where results are written (sharded JSONL); the
    # blob-store prefix of the bytes that came with the request (deleted with the job); per-job
    # credentials (Modzy aws-s3), encrypted under the server secret, erased when the job ends.
    Column("collect", JSONType, nullable=True),
    Column("output", JSONType, nullable=True),
    Column("blob_prefix", String(200), nullable=True),
    Column("secret", Text, nullable=True),
    # Bumped by every UPDATE of the row through SQLAlchemy Core (migration 0008): the job's
    # representation version, behind the API's ETags (api/conditional.py).
    Column(
        "version",
        BigInteger,
        nullable=False,
        default=1,
        server_default=text("1"),
        onupdate=literal_column("version + 1"),
    ),
)
# History: the scope always pins account_id, so each filter's index starts with it and ends in
# the ordering column + id (keyset pages walk the index; no sort).
Index("ix_jobs_account_created", jobs.c.account_id, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_account_project_created", jobs.c.account_id, jobs.c.project_id, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_account_status_created", jobs.c.account_id, jobs.c.status, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_account_pipeline_created", jobs.c.account_id, jobs.c.pipeline_id, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_account_type_created", jobs.c.account_id, jobs.c.job_type, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_account_updated", jobs.c.account_id, jobs.c.updated_at, jobs.c.id)
Index("ix_jobs_account_name", jobs.c.account_id, jobs.c.name, jobs.c.id)
Index("ix_jobs_account_status_id", jobs.c.account_id, jobs.c.status, jobs.c.id)
Index("ix_jobs_account_id", jobs.c.account_id, jobs.c.id)
# The key filter (native submitted_by, Modzy accessKey/user): migration 0012.
Index(
    "ix_jobs_account_submitted_created", jobs.c.account_id, jobs.c.submitted_by, jobs.c.created_at, jobs.c.id
)
Index(
    "ix_jobs_account_duration",
    jobs.c.account_id,
    func.coalesce(jobs.c.elapsed_time_ms, literal_column("-1")),
    jobs.c.id,
)
# "Not finished yet" (the `pending` history group, the dashboard's running jobs) is a tiny share of
# a long history: a partial index holds just those rows. Queries must spell the condition the
# same way (sorted literal values) for SQLite to use it: see history.status_clause.
ACTIVE_VALUES = sorted(s.value for s in ACTIVE)
_active_sql = text("status IN (" + ", ".join(f"'{v}'" for v in ACTIVE_VALUES) + ")")
Index(
    "ix_jobs_account_active_created",
    jobs.c.account_id,
    jobs.c.created_at,
    jobs.c.id,
    sqlite_where=_active_sql,
    postgresql_where=_active_sql,
)
# Name search (`ILIKE '%text%'`) on PostgreSQL: a trigram GIN index (migration 0002, needs pg_trgm).
Index(
    "ix_jobs_name_trgm",
    jobs.c.name,
    postgresql_using="gin",
    postgresql_ops={"name": "gin_trgm_ops"},
).ddl_if(dialect="postgresql")
# Searches of 1-2 characters on PostgreSQL (no trigram): a GIN index over conveyor_name_grams(name),
# a SQL function of migration 0013 (raw DDL there; store.history queries it).
NAME_GRAMS_INDEX = "ix_jobs_name_grams"
# Name search on SQLite: an FTS5 trigram table and its triggers (migration 0012, raw DDL: a virtual
# table has no Table here; store.history queries it).
NAME_SEARCH_FTS = "jobs_name_fts"
Index("ix_jobs_source_collection", jobs.c.source_collection_id)
# The sweeper looks for CANCELING jobs across accounts.
Index("ix_jobs_status_created", jobs.c.status, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_deadline", jobs.c.deadline_at)
# The live event hub polls "which jobs changed in the last seconds" across accounts (migration 0004).
Index("ix_jobs_updated_at", jobs.c.updated_at)

items = Table(
    "items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(500), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("byte_size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=True),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("result", JSONType, nullable=True),
    Column("error", Text, nullable=True),
    Column("source", Text, nullable=True),  # where the bytes came from: URL, s3://…, upload:, collection:
    # Where a worker reads the bytes when ``data`` is NULL (migration 0009): http(s)://…, s3://…,
    # blob:<key> (the blob store), collection-item:<id>. ``sha256`` of blob-stored bytes.
    Column("ref", Text, nullable=True),
    Column("sha256", String(64), nullable=True),
    # Antenna's pull protocol (migration 0010; async_api jobs only, NULL otherwise): the reply
    # subject of the item's current delivery (a result counts only with it), when that
    # delivery's lease runs out (then the item is offered again), and how often it was delivered.
    Column("reply_subject", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("deliveries", Integer, nullable=True),
    UniqueConstraint("job_id", "seq"),
)
Index("ix_items_job_status_seq", items.c.job_id, items.c.status, items.c.seq)
Index("ix_items_job_lease", items.c.job_id, items.c.lease_expires_at)

# Small per-item files (thumbnails, saliency maps) written by workers in the same transaction as
# the item's result. Kept in the database because that is all workers on other hosts share.
item_artifacts = Table(
    "item_artifacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", BigId, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("media_type", String(100), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("item_id", "kind"),
)
Index("ix_item_artifacts_job_id", item_artifacts.c.job_id)

chunks = Table(
    "chunks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("status", String(10), nullable=False),
    Column("lease_token", String(64), nullable=True),
    Column("leased_by", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
)
Index("ix_chunks_status_id", chunks.c.status, chunks.c.id)
Index("ix_chunks_job_status", chunks.c.job_id, chunks.c.status)
Index("ix_chunks_status_lease", chunks.c.status, chunks.c.lease_expires_at)
# /metrics observes the chunks finished since its previous scrape (migration 0004).
Index("ix_chunks_finished_at", chunks.c.finished_at)

job_logs = Table(
    "job_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("level", String(10), nullable=False),
    Column("message", Text, nullable=False),
)
Index("ix_job_logs_job_id", job_logs.c.job_id, job_logs.c.id)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("from_status", String(20), nullable=True),
    Column("to_status", String(20), nullable=False),
    Column("cause", Text, nullable=False),
)
Index("ix_job_events_job_id", job_events.c.job_id, job_events.c.id)

# Modzy's chunked file input: chunks of an OPEN job's inputs, staged here until the job is closed
# (then assembled into items in one transaction) or canceled (then dropped). Items never hold
# half an upload.
job_uploads = Table(
    "job_uploads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("item", String(500), nullable=False),
    Column("input", String(500), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_job_uploads_job_id", job_uploads.c.job_id, job_uploads.c.id)
Index("ix_job_uploads_job_item", job_uploads.c.job_id, job_uploads.c.item, job_uploads.c.input)

# A project-bound key may also be a member of other projects of its account, with a role in each.
memberships = Table(
    "memberships",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_id", Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("key_id", "project_id"),
)

# Audit trail: who (key prefix, or "cli") did what to which key, project or job, and when.
# Job status changes themselves are in job_events; a deleted job's audit rows outlive it.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, nullable=True),
    Column("actor", String(64), nullable=False),
    Column("action", String(50), nullable=False),
    Column("target", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_audit_events_account_id", audit_events.c.account_id, audit_events.c.id)
# Collections (migration 0005): named sets of stored inputs in a project. Jobs copy the bytes of
# the items they run over, so a job never depends on its collection staying as it was.
collections = Table(
    "collections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_collections_account_project", collections.c.account_id, collections.c.project_id, collections.c.id)

collection_items = Table(
    "collection_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("byte_size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),  # empty when the bytes are in the blob store (ref)
    Column("source", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("ref", Text, nullable=True),
    Column("sha256", String(64), nullable=True),
)
Index("ix_collection_items_collection_id", collection_items.c.collection_id, collection_items.c.id)

# Result shards written to a job's output (migration 0009): one row per shard file, upserted by
# name, so a shard rewritten after a worker's crash is counted once.
output_shards = Table(
    "output_shards",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("chunk_id", BigId, nullable=True),
    Column("items", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("written_at", UTCDateTime, nullable=False),
    UniqueConstraint("job_id", "name"),
)

# Remote processing services (migration 0007): HTTP services speaking Antenna's processing-service
# protocol, registered by an account's owner. Their pipelines are mirrored into ``pipelines`` as
# ``remote:<name>/<slug>``, so the name is unique server-wide.
processing_services = Table(
    "processing_services",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(63), nullable=False, unique=True),
    Column("endpoint_url", String(2000), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("info", JSONType, nullable=False),  # the service's last GET /info answer
    Column("live", Boolean, nullable=False, default=False),
    Column("ready", Boolean, nullable=False, default=False),
    Column("latency_ms", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_checked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_processing_services_account_id", processing_services.c.account_id, processing_services.c.id)

# Server-wide secrets generated once and shared by the API and every worker through the database
# (the key that signs the image URLs handed to processing services).
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Workers (migration 0011): every worker that reports itself — the server's local processes,
# Celery pool processes, HTTP and Antenna pull workers — upserted by its identity, for
# ``GET /api/v2/workers/`` and the dashboard. ``account_id`` NULL: the deployment's own workers,
# seen by every account. The identity is (kind, name, account): two accounts' pull workers may
# well share a hostname ("gpu01"), and one must never overwrite the other's row. NULLs are
# distinct in a unique constraint on both dialects, so the identity is two partial unique indexes.
workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("host", String(255), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("key_id", Integer, nullable=True),  # the key an http/pull worker authenticated with
    Column("pipelines", JSONType, nullable=False),
    Column("info", JSONType, nullable=False),  # client_info, software, version, pid, device
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("current_job_id", BigId, nullable=True),  # no foreign key: a deleted job is just gone
    Column("items_done", BigInteger, nullable=False, default=0),
    Column("stopped_at", UTCDateTime, nullable=True),
)
Index(
    "uq_workers_deployment_kind_name",
    workers.c.kind,
    workers.c.name,
    unique=True,
    sqlite_where=workers.c.account_id.is_(None),
    postgresql_where=workers.c.account_id.is_(None),
)
Index(
    "uq_workers_account_kind_name",
    workers.c.account_id,
    workers.c.kind,
    workers.c.name,
    unique=True,
    sqlite_where=workers.c.account_id.isnot(None),
    postgresql_where=workers.c.account_id.isnot(None),
)

# Antenna's pull protocol (migration 0010): a processing service that pulls tasks (the ADC
# worker) registers itself and its pipelines in a project; a job submitted there with one of
# those slugs is an async_api job. Its pipeline row is ``pull:<project_id>/<slug>``.
pull_services = Table(
    "pull_services",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("registered_by", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("project_id", "name"),
)

pull_pipelines = Table(
    "pull_pipelines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("slug", String(150), nullable=False),  # as the worker registered it
    Column("service_id", Integer, ForeignKey("pull_services.id", ondelete="CASCADE"), nullable=False),
    Column("pipeline_id", Integer, ForeignKey("pipelines.id"), nullable=False),  # the latest version's row
    Column("info", JSONType, nullable=False),  # the registered description (name, algorithms, ...)
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("project_id", "slug"),
)
