"""The blob store (conveyor.blobs): a file store in tmp_path and an S3 store on moto's real server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.blobs import BlobStore, FileBlobStore, S3BlobStore, key_of, new_prefix, open_blob_store
from conveyor.errors import InputUnavailable, InvalidInput, TooLarge
from conveyor.settings import Settings
from tests.moto_s3 import CREDENTIALS, moto_s3_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("boto3")
    with moto_s3_server() as url:
        yield url


def s3_settings(endpoint: str, blob_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        blob_url=blob_url,
        s3_endpoint_url=endpoint,
        s3_region=CREDENTIALS["region_name"],
        s3_access_key_id=CREDENTIALS["aws_access_key_id"],
        s3_secret_access_key=CREDENTIALS["aws_secret_access_key"],
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FileBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    import boto3

    bucket = f"blobs-{new_prefix()[5:17]}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=bucket)
    opened = open_blob_store(s3_settings(endpoint, f"s3://{bucket}/conveyor/blobs", tmp_path))
    assert isinstance(opened, S3BlobStore)
    return opened


def test_put_then_read_back_with_size_and_sha256(store: BlobStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    ref = store.put("jobs/abc/uploads/0", data)
    assert ref.ref == "blob:jobs/abc/uploads/0"
    assert ref.key == "jobs/abc/uploads/0"
    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read(ref.ref) == data
    assert store.read("jobs/abc/uploads/0") == data  # a bare key works too
    assert store.size(ref.ref) == len(data)


def test_put_replaces_a_blob(store: BlobStore) -> None:
    store.put("k/one", b"first")
    store.put("k/one", b"second, longer")
    assert store.read("blob:k/one") == b"second, longer"


def test_empty_blob(store: BlobStore) -> None:
    ref = store.put("k/empty", b"")
    assert (ref.size, ref.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert store.read(ref.ref) == b""


def test_put_file_streams_and_hashes(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    block = bytes(range(256)) * 4096  # 1 MiB
    with source.open("wb") as out:
        for index in range(3):
            out.write(block[index:] + block[:index])
    data = source.read_bytes()
    ref = store.put_file("jobs/x/big.bin", source)
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.read(ref.ref) == data
    assert source.exists()  # the caller's file is left alone


def test_put_stream_concatenates_chunks(store: BlobStore) -> None:
    ref = store.put_stream("jobs/y/0", iter([b"ab", b"", b"cd", b"e"]))
    assert (ref.size, store.read(ref.ref)) == (5, b"abcde")
    assert ref.sha256 == hashlib.sha256(b"abcde").hexdigest()


def test_missing_blob_is_input_unavailable_naming_it(store: BlobStore) -> None:
    with pytest.raises(InputUnavailable, match=r"blob:jobs/nothing/here is no longer in the blob store"):
        store.read("blob:jobs/nothing/here")
    assert store.size("jobs/nothing/here") is None


def test_read_over_max_bytes_is_too_large(store: BlobStore) -> None:
    ref = store.put("k/big", b"x" * 101)
    with pytest.raises(TooLarge, match="101 bytes, over the 100-byte cap"):
        store.read(ref.ref, max_bytes=100)
    assert store.read(ref.ref, max_bytes=101) == b"x" * 101


def test_delete_prefix_removes_whole_segments_only(store: BlobStore) -> None:
    for key in ("jobs/a/uploads/0", "jobs/a/uploads/1", "jobs/a/x", "jobs/ab/0", "jobs/b/0"):
        store.put(key, key.encode())
    assert store.delete_prefix("jobs/a") == 3
    for key in ("jobs/a/uploads/0", "jobs/a/uploads/1", "jobs/a/x"):
        with pytest.raises(InputUnavailable):
            store.read(key)
    assert store.read("jobs/ab/0") == b"jobs/ab/0"  # `jobs/a` is not a string prefix of `jobs/ab`
    assert store.read("jobs/b/0") == b"jobs/b/0"
    assert store.delete_prefix("jobs/a") == 0
    assert store.delete_prefix("jobs/b/0") == 1  # a prefix that is a key deletes that blob


def test_delete_prefix_pages_past_one_listing(store: BlobStore) -> None:
    if isinstance(store, S3BlobStore):
        # moto pages at 1,000 keys like S3; 1,001 objects take two listing pages and two deletes.
        for index in range(1001):
            store.client.put_object(Bucket=store.bucket, Key=store.object_key(f"jobs/many/{index}"), Body=b"")
    else:
        for index in range(1001):
            store.put(f"jobs/many/{index}", b"")
    assert store.delete_prefix("jobs/many") == 1001
    assert store.size("jobs/many/0") is None


@pytest.mark.parametrize(
    "key", ["", "/abs/key", "a/../b", "..", "a//b", "a/./b", "a\\b", "blob:", "a/.x.tmp-1"]
)
def test_bad_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid blob key"):
        store.put(key, b"x")


def test_file_store_writes_atomically_under_its_root(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    store.put("jobs/j/0", b"data")
    assert (tmp_path / "blobs" / "jobs" / "j" / "0").read_bytes() == b"data"
    assert store.url == (tmp_path / "blobs").resolve().as_uri()

    def failing() -> Iterator[bytes]:
        yield b"half"
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        store.put_stream("jobs/j/0", failing())
    assert store.read("jobs/j/0") == b"data"  # the old blob stands; no torn write
    assert sorted(p.name for p in (tmp_path / "blobs" / "jobs" / "j").iterdir()) == ["0"]  # no temp left


def test_s3_store_keeps_objects_under_its_prefix(s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket="prefixed")
    store = open_blob_store(s3_settings(s3_endpoint, "s3://prefixed/deep/blobs/", tmp_path))
    assert store.url == "s3://prefixed/deep/blobs"
    store.put("jobs/p/0", b"in s3")
    assert s3.get_object(Bucket="prefixed", Key="deep/blobs/jobs/p/0")["Body"].read() == b"in s3"


def test_open_blob_store_defaults_to_files_under_the_data_dir(tmp_path: Path) -> None:
    store = open_blob_store(Settings(data_dir=tmp_path))
    assert isinstance(store, FileBlobStore)
    assert store.root == (tmp_path / "blobs").resolve()
    other = open_blob_store(Settings(data_dir=tmp_path, blob_url=(tmp_path / "elsewhere").as_uri()))
    assert isinstance(other, FileBlobStore) and other.root == (tmp_path / "elsewhere").resolve()


def test_new_prefix_is_fresh_and_a_valid_key() -> None:
    one, two = new_prefix(), new_prefix()
    assert one != two and one.startswith("jobs/") and len(one) == len("jobs/") + 32
    assert key_of(one) == one
