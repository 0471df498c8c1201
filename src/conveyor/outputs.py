"""Job outputs: a job's finished items written as sharded JSONL to ``s3://bucket/prefix/`` or
``file:///dir/``, plus a final ``manifest.json`` listing the shards.

A leaf module (settings, errors, clock only; boto3 imported lazily). ``validate_output`` is the
cheap check at submit; ``OutputSink.for_uri`` gives the writer that workers (one shard per items
chunk, ``worker/shards.py``) and the sweeper (the manifest, ``services/outputs.py``) use. Every
write replaces a whole object atomically, so a shard rewritten after a crash is never torn and
never holds a line twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from conveyor.errors import InputUnavailable, InvalidInput
from conveyor.settings import Settings

MANIFEST = "manifest.json"
#: Attempts of one sink write (shard or manifest) before it is given up, and the first backoff.
WRITE_ATTEMPTS = 4
WRITE_BACKOFF_SECONDS = 0.2

T = TypeVar("T")


def shard_name(ordinal: int) -> str:
    """``predictions-00001.jsonl`` for the first items chunk of a job, and so on."""
    return f"predictions-{ordinal:05d}.jsonl"


def encode_shard(records: Iterable[dict[str, Any]]) -> tuple[bytes, int]:
    """One JSON line per record (name, seq, item_id, source, status, result, error), in seq
    order; the bytes and the number of lines."""
    ordered = sorted(records, key=lambda r: r["seq"])
    lines = [json.dumps(r, separators=(",", ":"), ensure_ascii=False, default=str) for r in ordered]
    data = "".join(line + "\n" for line in lines).encode()
    return data, len(lines)


# --------------------------------------------------------------------------- validation
def validate_output(spec: Any, settings: Settings) -> dict[str, Any]:
    """Check a job's ``output`` at submit: ``{"uri": "s3://bucket/prefix/" | "file:///abs/dir/"}``.

    A ``file://`` directory must be under ``CONVEYOR_OUTPUT_FILE_ROOT`` (any API user could
    otherwise write wherever the server can); it is created and must be writable. An ``s3://``
    bucket must answer one ``head_bucket`` with the server's S3 settings. Returns the output as
    the job stores it (the uri normalized to end in ``/``)."""
    if not isinstance(spec, dict) or set(spec) != {"uri"} or not isinstance(spec["uri"], str):
        raise InvalidInput('`output` must be {"uri": "s3://bucket/prefix/" or "file:///dir/"}.')
    uri = spec["uri"].strip()
    if uri.startswith("s3://"):
        bucket, prefix = _s3_parts(uri)
        _check_bucket(bucket, settings)
        return {"uri": f"s3://{bucket}/{prefix}"}
    if uri.startswith("file://"):
        directory = _file_dir(uri, settings)
        return {"uri": directory.as_uri() + "/"}
    raise InvalidInput(f"Output {uri!r}: the uri must start with s3:// or file://.")


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidInput(f"Output {uri!r} has no bucket.")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _file_dir(uri: str, settings: Settings) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise InvalidInput(f"Output {uri!r}: a file:// uri is file:///absolute/dir/ (no host, no query).")
    raw = unquote(parts.path)
    if "\x00" in raw:
        raise InvalidInput(f"Output {uri!r}: the path holds a NUL character.")
    if not raw.startswith("/"):
        raise InvalidInput(f"Output {uri!r}: the directory must be an absolute path.")
    root = settings.resolved_output_file_root.resolve()
    directory = Path(os.path.normpath(raw))
    # Resolve what exists (symlinks included) before the containment check.
    resolved = directory.resolve()
    if resolved != root and root not in resolved.parents:
        raise InvalidInput(
            f"Output {uri!r} is outside the server's output root {root} (CONVEYOR_OUTPUT_FILE_ROOT).",
            root=str(root),
        )
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputUnavailable(f"Output {uri!r}: cannot create the directory: {exc.strerror}.") from None
    if not resolved.is_dir() or not os.access(resolved, os.W_OK | os.X_OK):
        raise InputUnavailable(f"Output {uri!r}: the directory is not writable by the server.")
    return resolved


def _s3_client(settings: Settings) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidInput("S3 outputs need boto3 on the server: pip install 'conveyor[s3]'.") from None
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        config=Config(
            connect_timeout=settings.url_timeout_seconds,
            read_timeout=settings.url_timeout_seconds,
            retries={"max_attempts": 2},
        ),
    )


def _check_bucket(bucket: str, settings: Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client(settings).head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        reason = "no such bucket" if code in ("404", "NoSuchBucket", "NotFound") else str(exc)
        raise InputUnavailable(f"Output s3://{bucket}/: {reason}.") from None
    except BotoCoreError as exc:
        raise InputUnavailable(f"Output s3://{bucket}/: cannot reach the bucket: {exc}") from None


# --------------------------------------------------------------------------- sinks
class OutputSink(ABC):
    """Where one job's shards and manifest go. Every write replaces the whole object atomically."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @staticmethod
    def for_uri(uri: str, settings: Settings) -> OutputSink:
        if uri.startswith("s3://"):
            bucket, prefix = _s3_parts(uri)
            return S3Sink(uri, bucket, prefix, settings)
        if uri.startswith("file://"):
            return FileSink(uri, Path(unquote(urlsplit(uri).path)))
        raise InvalidInput(f"Output {uri!r}: the uri must start with s3:// or file://.")

    def location(self, name: str) -> str:
        return self.uri + name

    def write_shard(self, name: str, data: bytes) -> None:
        self._put(name, data, "application/x-ndjson")

    def write_manifest(self, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, indent=2, ensure_ascii=False, default=str).encode() + b"\n"
        self._put(MANIFEST, data, "application/json")

    def remove_partial(self) -> int:
        """Remove what writers killed mid-write left (none for S3, whose PUT is all or nothing)."""
        return 0

    @abstractmethod
    def _put(self, name: str, data: bytes, content_type: str) -> None: ...


class FileSink(OutputSink):
    def __init__(self, uri: str, directory: Path) -> None:
        super().__init__(uri)
        self.directory = directory

    def _put(self, name: str, data: bytes, content_type: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)  # readers see the old file or the new one
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)

    def remove_partial(self) -> int:
        removed = 0
        for partial in self.directory.glob(".*.tmp"):
            if partial.name.startswith((".predictions-", f".{MANIFEST}.")):
                partial.unlink(missing_ok=True)
                removed += 1
        return removed


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Sink(OutputSink):
    def __init__(self, uri: str, bucket: str, prefix: str, settings: Settings) -> None:
        super().__init__(uri)
        self.bucket = bucket
        self.prefix = prefix
        self.client = _s3_client(settings)

    def _put(self, name: str, data: bytes, content_type: str) -> None:
        # One PUT: S3 makes an object visible whole or not at all.
        key = self.prefix + name
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)


def with_retries(
    write: Callable[[], T],
    *,
    attempts: int = WRITE_ATTEMPTS,
    backoff: float = WRITE_BACKOFF_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``write``; on an error try again (backoff doubling), re-raising the last error."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception:
            if attempt == attempts - 1:
                raise
            sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")
