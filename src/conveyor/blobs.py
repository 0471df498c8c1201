"""The blob store: bytes that arrive with a request (uploads, Modzy chunks, inline base64, stored
collection items), kept out of the database.

An item or collection item keeps only ``ref`` (``blob:<key>``), its size and sha256; workers and
the media route read the bytes back by that ref. ``CONVEYOR_BLOB_URL`` picks the store:
``file:///path`` (the default: ``<data_dir>/blobs``, one file per key, written atomically) or
``s3://bucket/prefix`` (distributed mode: every worker must reach it). Keys are ``/``-separated
relative paths: a job's bytes live under its ``jobs/<uuid hex>`` prefix (:func:`new_prefix`,
``jobs.blob_prefix``), a collection's under ``collections/<id>/``; deleting the job or the
collection deletes the prefix.

A leaf module: it imports only settings, errors and the standard library (boto3 through
conveyor.s3client, on first use of an S3 store).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from conveyor.errors import ConveyorError, InputUnavailable, InvalidInput, TooLarge
from conveyor.settings import Settings

SCHEME = "blob:"
COPY_BLOCK = 1024 * 1024
_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class BlobRef:
    """Where a blob is (``blob:<key>``), how many bytes it holds and their sha256 (hex)."""

    ref: str
    size: int
    sha256: str

    @property
    def key(self) -> str:
        return key_of(self.ref)


def new_prefix() -> str:
    """A fresh prefix for one job's blobs: ``jobs/<uuid4 hex>``."""
    return f"jobs/{uuid.uuid4().hex}"


def is_blob_ref(ref: str | None) -> bool:
    return ref is not None and ref.startswith(SCHEME)


def key_of(ref_or_key: str) -> str:
    """The key of ``blob:<key>`` (or of a bare key), checked: relative, no ``..``, no empty part."""
    key = ref_or_key[len(SCHEME) :] if ref_or_key.startswith(SCHEME) else ref_or_key
    return check_key(key)


def check_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
        or any(_TMP_MARK in part for part in parts)
    ):
        raise InvalidInput(f"Invalid blob key {key!r}: a relative path without '.', '..' or empty parts.")
    return key


def _hashed_chunks(chunks: Iterable[bytes], sink: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        if chunk:
            digest.update(chunk)
            sink.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def file_chunks(path: Path, block: int = COPY_BLOCK) -> Iterator[bytes]:
    """A file's bytes block by block (never the whole file at once)."""
    with path.open("rb") as source:
        while chunk := source.read(block):
            yield chunk


class BlobStore(ABC):
    """Bytes by key. ``put*`` return the :class:`BlobRef` an item row records."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the store is (``file:///…`` or ``s3://bucket/prefix``); holds no credentials."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        """Store the concatenated ``chunks`` under ``key`` (replacing any blob there), hashing as
        they stream by."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> BlobRef:
        """Store a local file under ``key``, streamed and hashed block by block."""

    @abstractmethod
    def size(self, ref_or_key: str) -> int | None:
        """The blob's size in bytes, or None when there is no such blob."""

    @abstractmethod
    def read(self, ref_or_key: str, max_bytes: int | None = None) -> bytes:
        """The blob's bytes. ``InputUnavailable`` when it is missing (or the store cannot be
        read), ``TooLarge`` when it holds more than ``max_bytes``."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete the blob ``prefix`` and every blob under ``prefix/``; how many were removed.
        A prefix names whole path segments: ``jobs/ab`` does not touch ``jobs/abc/…``."""

    def put(self, key: str, data: bytes) -> BlobRef:
        """Store ``data`` under ``key``."""
        return self.put_stream(key, [data])

    def _missing(self, key: str) -> InputUnavailable:
        return InputUnavailable(
            f"The stored input {SCHEME}{key} is no longer in the blob store {self.url} "
            "(deleted, or the store was moved).",
            ref=f"{SCHEME}{key}",
        )

    @staticmethod
    def _too_large(key: str, size: int, max_bytes: int) -> TooLarge:
        return TooLarge(
            f"The stored input {SCHEME}{key} is {size} bytes, over the {max_bytes}-byte cap.",
            ref=f"{SCHEME}{key}",
        )


class FileBlobStore(BlobStore):
    """One file per key under ``root``. Writes go to a temporary file in the target's directory,
    flushed to disk, then ``os.replace``-d into place: a reader never sees a torn blob."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def path_of(self, ref_or_key: str) -> Path:
        return self.root.joinpath(*key_of(ref_or_key).split("/"))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        target = self.path_of(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:40]}{_TMP_MARK}")
        try:
            with os.fdopen(fd, "wb") as sink:
                size, sha256 = _hashed_chunks(chunks, sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return BlobRef(f"{SCHEME}{key_of(key)}", size, sha256)

    def put_file(self, key: str, path: Path) -> BlobRef:
        return self.put_stream(key, file_chunks(Path(path)))

    def size(self, ref_or_key: str) -> int | None:
        try:
            return self.path_of(ref_or_key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read(self, ref_or_key: str, max_bytes: int | None = None) -> bytes:
        key = key_of(ref_or_key)
        try:
            with self.path_of(key).open("rb") as source:
                size = os.fstat(source.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise self._too_large(key, size, max_bytes)
                return source.read() if max_bytes is None else source.read(max_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None

    def delete_prefix(self, prefix: str) -> int:
        target = self.path_of(prefix)
        if target.is_file():
            target.unlink(missing_ok=True)
            return 1
        if not target.is_dir():
            return 0
        count = sum(1 for p in target.rglob("*") if p.is_file() and _TMP_MARK not in p.name)
        shutil.rmtree(target, ignore_errors=True)
        return count


class S3BlobStore(BlobStore):
    """One object per key at ``s3://bucket/prefix/key``. An object appears whole when its PUT
    (or multipart upload) completes, so readers never see a torn blob."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        if not bucket:
            raise ConveyorError("The S3 blob store needs a bucket: CONVEYOR_BLOB_URL=s3://bucket/prefix.")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, ref_or_key: str) -> str:
        key = key_of(ref_or_key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        # Spooled to a temporary file (memory up to 8 MB), hashed on the way, then uploaded with
        # boto3's managed transfer (multipart for large blobs).
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            size, sha256 = _hashed_chunks(chunks, spool)  # type: ignore[arg-type]
            spool.seek(0)
            self._upload(key, spool)
        return BlobRef(f"{SCHEME}{key_of(key)}", size, sha256)

    def put_file(self, key: str, path: Path) -> BlobRef:
        digest = hashlib.sha256()
        size = 0
        for chunk in file_chunks(Path(path)):
            digest.update(chunk)
            size += len(chunk)
        with Path(path).open("rb") as source:
            self._upload(key, source)
        return BlobRef(f"{SCHEME}{key_of(key)}", size, digest.hexdigest())

    def put(self, key: str, data: bytes) -> BlobRef:
        object_key = self.object_key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
        except Exception as exc:
            raise self._unwritable(key, exc) from None
        return BlobRef(f"{SCHEME}{key_of(key)}", len(data), hashlib.sha256(data).hexdigest())

    def _upload(self, key: str, source: Any) -> None:
        try:
            self.client.upload_fileobj(source, self.bucket, self.object_key(key))
        except Exception as exc:
            raise self._unwritable(key, exc) from None

    def _unwritable(self, key: str, exc: Exception) -> ConveyorError:
        return ConveyorError(f"Cannot write {SCHEME}{key} to the blob store {self.url}: {exc}")

    def size(self, ref_or_key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(ref_or_key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return int(head.get("ContentLength", 0))

    def read(self, ref_or_key: str, max_bytes: int | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = key_of(ref_or_key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            length = int(response.get("ContentLength", 0))
            if max_bytes is not None and length > max_bytes:
                response["Body"].close()
                raise self._too_large(key, length, max_bytes)
            body = response["Body"]
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
            body.close()
        except ClientError as exc:
            if _is_missing(exc):
                raise self._missing(key) from None
            raise InputUnavailable(
                f"Cannot read {SCHEME}{key} from the blob store {self.url}: {exc}", ref=f"{SCHEME}{key}"
            ) from None
        except BotoCoreError as exc:
            raise InputUnavailable(
                f"Cannot read {SCHEME}{key} from the blob store {self.url}: {exc}", ref=f"{SCHEME}{key}"
            ) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise self._too_large(key, len(data), max_bytes)
        return data

    def delete_prefix(self, prefix: str) -> int:
        base = self.object_key(prefix)
        removed = 0
        if self.size(prefix) is not None:
            self.client.delete_object(Bucket=self.bucket, Key=base)
            removed += 1
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{base}/"):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if not keys:
                continue
            # A page holds at most 1,000 keys: the most one DeleteObjects call takes.
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            removed += len(keys) - len(answer.get("Errors", []))
        return removed


def _is_missing(exc: Any) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store ``CONVEYOR_BLOB_URL`` names (default: ``file://`` under ``data_dir/blobs``)."""
    url = settings.blob_url
    if not url:
        return FileBlobStore(settings.data_dir / "blobs")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConveyorError(f"CONVEYOR_BLOB_URL {url!r}: a file:// URL names a local path (file:///…).")
        return FileBlobStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        from conveyor.s3client import make_client

        return S3BlobStore(parts.netloc, parts.path, make_client(settings))
    raise ConveyorError(f"CONVEYOR_BLOB_URL {url!r}: use file:///path or s3://bucket/prefix.")
