"""conveyor.worker.fetching against real servers on loopback: the file server of the input tests
(which plays a flaky origin and a flaky S3 endpoint too) and moto's S3 server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from conveyor.domain.work import ItemInput
from conveyor.errors import AddressNotAllowed, InputUnavailable, InvalidInput, TooLarge
from conveyor.inputs import url as url_inputs
from conveyor.inputs.s3 import S3Credentials
from conveyor.settings import Settings
from conveyor.worker.fetching import Fetcher, Prefetch, outcome_error
from tests.helpers import wait_for
from tests.helpers.inputs import FileServer
from tests.moto_s3 import CREDENTIALS, moto_s3_server
from tests.reliability.test_bad_input import _Redirector


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def fetcher(tmp_path: Path, **overrides: Any) -> Fetcher:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "allow_private_urls": True,
        "url_timeout_seconds": 2.0,
        "fetch_retries": 2,
        "fetch_backoff_seconds": 0.01,
        "max_input_bytes": 1000,
        **overrides,
    }
    return Fetcher(Settings(**values))


# --------------------------------------------------------------------------- http(s)
def test_a_url_is_fetched(tmp_path: Path, files: FileServer) -> None:
    assert fetcher(tmp_path).fetch(files.add("/a.txt", b"hello"), "a") == b"hello"


@pytest.mark.parametrize("status", [404, 403, 410])
def test_a_client_error_is_not_retried(tmp_path: Path, files: FileServer, status: int) -> None:
    target = files.add("/gone", b"no", status=status)
    with pytest.raises(InputUnavailable) as caught:
        fetcher(tmp_path).fetch(target, "gone.jpg")
    assert f"answered HTTP {status}" in caught.value.message and "'gone.jpg'" in caught.value.message
    assert "gave up" not in caught.value.message
    assert files.hits == ["/gone"]


@pytest.mark.parametrize("status", [503, 500, 429])
def test_a_server_error_or_429_is_retried_until_it_succeeds(
    tmp_path: Path, files: FileServer, status: int
) -> None:
    files.add("/flaky", b"finally")
    target = files.answer_first("/flaky", (status, b"busy"), (status, b"busy"))
    assert fetcher(tmp_path).fetch(target, "flaky") == b"finally"
    assert files.hits == ["/flaky"] * 3


def test_retries_end_with_the_reason_and_the_attempts(tmp_path: Path, files: FileServer) -> None:
    target = files.add("/down", b"down", status=503)
    with pytest.raises(InputUnavailable) as caught:
        fetcher(tmp_path, fetch_retries=1).fetch(target, "down")
    assert "answered HTTP 503" in caught.value.message and "gave up after 2 attempts" in caught.value.message
    assert files.hits == ["/down"] * 2
    assert outcome_error(caught.value).startswith("input_unavailable: Input 'down': ")


def test_a_timeout_is_retried_then_fails(tmp_path: Path, files: FileServer) -> None:
    target = files.add("/slow", b"x" * 50, drip=0.1)  # 5 s of body against a 0.5 s deadline
    with pytest.raises(InputUnavailable) as caught:
        fetcher(tmp_path, url_timeout_seconds=0.5, fetch_retries=1).fetch(target, "slow")
    assert "timed out" in caught.value.message or "took longer" in caught.value.message, caught.value.message
    assert "gave up after 2 attempts" in caught.value.message
    assert files.hits == ["/slow"] * 2


def test_a_refused_connection_is_retried(tmp_path: Path) -> None:
    closed = FileServer()
    target = closed.add("/x", b"x")
    closed.close()  # nothing listens on its port any more
    with pytest.raises(InputUnavailable, match="gave up after 3 attempts"):
        fetcher(tmp_path).fetch(target, "x")


def test_the_size_cap_holds_with_and_without_a_content_length(tmp_path: Path, files: FileServer) -> None:
    big = files.add("/big", b"x" * 1001)
    streamed = files.add("/streamed", b"x" * 1001, headers={"Content-Length": ""})
    for target in (big, streamed):
        with pytest.raises(TooLarge) as caught:
            fetcher(tmp_path).fetch(target, "big")
        assert "1000-byte cap" in caught.value.message
        assert outcome_error(caught.value).startswith("input_too_large: ")
    assert files.hits == ["/big", "/streamed"]  # never retried


def test_loopback_is_refused_at_fetch_time_by_default(tmp_path: Path, files: FileServer) -> None:
    target = files.add("/private", b"internal")
    with pytest.raises(AddressNotAllowed) as caught:
        fetcher(tmp_path, allow_private_urls=False).fetch(target, "p")
    assert "CONVEYOR_ALLOW_PRIVATE_URLS" in caught.value.message
    assert outcome_error(caught.value).startswith("address_not_allowed: ")
    assert files.hits == []


def test_a_redirect_into_the_private_network_is_refused_at_fetch_time(
    tmp_path: Path, files: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As at submit (tests/reliability/test_bad_input.py): 127.0.0.2 plays a public host, so only
    the hop its redirect leads to is private; it is refused, never contacted, never retried."""
    real = url_inputs.is_public
    monkeypatch.setattr(url_inputs, "is_public", lambda a: str(a) == "127.0.0.2" or real(a))
    secret = files.add("/secret", b"internal")
    strict = fetcher(tmp_path, allow_private_urls=False)
    for target in (secret, secret.replace("127.0.0.1", "localhost"), "http://169.254.169.254/latest/"):
        redirector = _Redirector(target)
        try:
            with pytest.raises(AddressNotAllowed, match="CONVEYOR_ALLOW_PRIVATE_URLS"):
                strict.fetch(redirector.url, "r")
        finally:
            redirector.close()
    assert files.hits == []


def test_a_text_item_must_be_utf8(tmp_path: Path, files: FileServer) -> None:
    good = ItemInput(1, 0, "good", "text", b"", files.add("/good.txt", "héllo".encode()))
    bad = ItemInput(2, 1, "bad", "text", b"", files.add("/bad.txt", b"\xff\xfe\x00"))
    binary = ItemInput(3, 2, "bin", "base64", b"", bad.ref)
    get = fetcher(tmp_path)
    assert get.fetch_item(good) == "héllo".encode()
    assert get.fetch_item(binary) == b"\xff\xfe\x00"
    with pytest.raises(InvalidInput, match="not UTF-8") as caught:
        get.fetch_item(bad)
    assert outcome_error(caught.value).startswith("invalid_input: Input 'bad'")


# --------------------------------------------------------------------------- other kinds
def test_blob_and_collection_item_readers(tmp_path: Path, files: FileServer) -> None:
    blobs = {"j1/0": b"blob bytes"}
    stored = {7: (b"stored", None), 8: (b"", files.add("/c.txt", b"by ref")), 9: (b"", "collection-item:7")}
    wired = Fetcher(
        fetcher(tmp_path).settings, read_blob=blobs.__getitem__, read_collection_item=stored.__getitem__
    )
    assert wired.fetch("blob:j1/0", "b") == b"blob bytes"
    assert wired.fetch("collection-item:7", "c") == b"stored"
    assert wired.fetch("collection-item:8", "c") == b"by ref"
    with pytest.raises(InputUnavailable, match=r"'b'.*gone"):
        wired.fetch("blob:j1/missing", "b")
    with pytest.raises(InvalidInput, match="refers to another"):
        wired.fetch("collection-item:9", "c")
    bare = fetcher(tmp_path)
    for ref in ("blob:j1/0", "collection-item:7"):
        with pytest.raises(InvalidInput, match="this worker cannot read"):
            bare.fetch(ref, "x")
    with pytest.raises(InvalidInput, match="unknown kind of reference 'ftp'"):
        bare.fetch("ftp://host/file", "x")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
        client.create_bucket(Bucket="photos")
        client.put_object(Bucket="photos", Key="2026/a.jpg", Body=b"jpeg bytes")
        client.put_object(Bucket="photos", Key="2026/big.bin", Body=b"x" * 1001)
        yield endpoint


def s3_fetcher(tmp_path: Path, endpoint: str, **overrides: Any) -> Fetcher:
    return fetcher(
        tmp_path,
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        **overrides,
    )


def test_s3_objects_with_server_or_per_job_credentials(tmp_path: Path, s3_endpoint: str) -> None:
    get = s3_fetcher(tmp_path, s3_endpoint)
    assert get.fetch("s3://photos/2026/a.jpg", "a") == b"jpeg bytes"
    job_credentials = S3Credentials("job-key", "job-secret", "us-east-1")
    assert get.fetch("s3://photos/2026/a.jpg", "a", credentials=job_credentials) == b"jpeg bytes"
    assert set(get._s3) == {None, job_credentials}  # one client per set of credentials
    with pytest.raises(InputUnavailable, match="no such object") as caught:
        get.fetch("s3://photos/2026/missing.jpg", "missing.jpg")
    assert "gave up" not in caught.value.message and "'missing.jpg'" in caught.value.message
    with pytest.raises(TooLarge):
        get.fetch("s3://photos/2026/big.bin", "big")
    with pytest.raises(InvalidInput, match="prefix"):
        get.fetch("s3://photos/2026/", "prefix")


def test_s3_throttling_is_retried(tmp_path: Path, files: FileServer) -> None:
    """The file server plays an S3 endpoint that answers SlowDown twice (botocore's own retry
    takes one of them, the fetcher's retry the other), then the object."""
    slow_down = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    files.add("/bucket/key.txt", b"object body")
    files.answer_first("/bucket/key.txt", (503, slow_down), (503, slow_down))
    get = s3_fetcher(tmp_path, files.base)
    assert get.fetch("s3://bucket/key.txt", "key") == b"object body"
    assert files.hits == ["/bucket/key.txt"] * 3


# --------------------------------------------------------------------------- prefetch
def items_at(refs: list[str | None]) -> list[ItemInput]:
    return [
        ItemInput(i, i, f"i{i}", "text", b"inline" if ref is None else b"", ref) for i, ref in enumerate(refs)
    ]


def test_prefetch_hands_items_over_in_order_with_their_failures(tmp_path: Path, files: FileServer) -> None:
    # Later items answer sooner, so the fetch threads finish out of order.
    refs: list[str | None] = [files.add(f"/p{i}", f"p{i}".encode(), drip=0.02 * (6 - i)) for i in range(6)]
    refs[2] = None  # an item whose bytes are in its row
    refs[4] = files.base + "/missing"
    get = fetcher(tmp_path)
    with Prefetch(
        lambda item, stop: get.fetch_item(item, stop=stop), items_at(refs), concurrency=4, window=6
    ) as p:
        first, second, end = p.take(4), p.take(4), p.take(4)
    assert first is not None and second is not None and end == []
    fetched = first + second
    assert [f.item.seq for f in fetched] == list(range(6))
    assert [f.item.data for f in fetched] == [b"p0", b"p1", b"inline", b"p3", b"", b"p5"]
    assert [f.error is None for f in fetched] == [True, True, True, True, False, True]
    error = fetched[4].error
    assert error is not None and error.startswith("input_unavailable: Input 'i4'") and "HTTP 404" in error
    assert fetched[4].started_at is not None and fetched[4].finished_at is not None


def test_prefetch_runs_at_most_window_items_ahead(tmp_path: Path) -> None:
    loaded: list[int] = []
    lock = threading.Lock()

    def load(item: ItemInput, stop: Callable[[], bool]) -> bytes:
        with lock:
            loaded.append(item.seq)
        return b"x"

    prefetch = Prefetch(load, items_at([f"blob:{i}" for i in range(40)]), concurrency=3, window=7)
    try:
        wait_for(lambda: len(loaded) == 7, timeout=10, what="a full window")
        time.sleep(0.3)  # room for a fetch past the window, if the bound were broken
        assert len(loaded) == 7 and prefetch.most_ahead == 7
        batch = prefetch.take(5)
        assert batch is not None and [f.item.seq for f in batch] == [0, 1, 2, 3, 4]
        wait_for(lambda: len(loaded) == 12, timeout=10, what="the window to slide")
        time.sleep(0.3)
        assert len(loaded) == 12
        rest: list[int] = []
        while (more := prefetch.take(5)) and len(rest) < 100:
            rest.extend(f.item.seq for f in more)
        assert rest == list(range(5, 40)) and prefetch.most_ahead == 7
    finally:
        prefetch.close()


def test_a_stop_ends_the_prefetch_without_waiting_for_a_hanging_url(
    tmp_path: Path, files: FileServer
) -> None:
    hanging = [files.add(f"/hang{i}", b"x" * 100, drip=1.0) for i in range(4)]  # 100 s per body
    get = fetcher(tmp_path, url_timeout_seconds=60)
    stop = threading.Event()
    calls: list[int] = []

    def load(item: ItemInput, stopping: Callable[[], bool]) -> bytes:
        calls.append(item.seq)
        return get.fetch_item(item, stop=stopping)

    prefetch = Prefetch(
        load, items_at([*hanging, *hanging]), concurrency=2, window=8, should_stop=stop.is_set
    )
    wait_for(lambda: len(files.hits) == 2, timeout=10, what="two fetches in flight")
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert prefetch.take(2) is None
    assert time.monotonic() - started < 10  # far below the 60 s the hanging bodies would take
    prefetch.close()
    time.sleep(0.3)
    assert calls == [0, 1]  # no fetch thread picked more work after the stop
