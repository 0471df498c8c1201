"""The blob store on a real server: uploaded (Modzy chunked) inputs and stored collection items
keep their bytes out of the database, jobs over collections copy none, deleting a job or a
collection deletes its blobs; on the default file store and on S3 (moto)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conveyor import media
from conveyor.pipelines.digits import holdout_pngs
from conveyor.settings import Settings
from conveyor.store import Store
from tests.helpers import Server, start_server
from tests.helpers.api import JOBS, all_items, b64, finished, unique
from tests.moto_s3 import CREDENTIALS, moto_s3_server

COLLECTIONS = "/api/v2/collections/"
INLINE_BYTES = 16  # stored items up to this stay in the row; the digit PNGs are bigger
CHUNK = 50  # each PNG goes up in several chunks


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("blobs"),
        workers=1,
        extra_env={"CONVEYOR_BLOB_INLINE_BYTES": str(INLINE_BYTES)},
    )
    SERVERS[started.url] = started
    yield started
    started.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def database(server: Server) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'conveyor.db'}")


def rows(server: Server, sql: str, **params: Any) -> list[Any]:
    engine = database(server)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def upload_open_job(client: httpx.Client, model: str, files: list[tuple[str, bytes]]) -> int:
    """Open a Modzy job, upload each file in chunks, close it; the native job id."""
    opened = client.post("/api/jobs", json={"model": {"identifier": model, "version": "1"}})
    assert opened.status_code in (200, 201), opened.text
    ident = opened.json()["jobIdentifier"]
    for name, data in files:
        for start in range(0, len(data), CHUNK):
            sent = client.post(
                f"/api/jobs/{ident}/{name}/image", files={"input": ("c", data[start : start + CHUNK])}
            )
            assert sent.status_code in (200, 201), sent.text
    closed = client.post(f"/api/jobs/{ident}/close")
    assert closed.status_code == 200, closed.text
    return job_id_for(server_of(client), ident)


def job_id_for(server: Server, ident: str) -> int:
    return int(rows(server, "SELECT id FROM jobs WHERE uuid = :u", u=ident)[0][0])


SERVERS: dict[str, Server] = {}


def server_of(client: httpx.Client) -> Server:
    return SERVERS[str(client.base_url).rstrip("/")]


def inline_results(client: httpx.Client, pipeline: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    inputs = [{"name": name, "kind": "base64", "data": b64(data)} for name, data in files]
    response = client.post(
        JOBS + "?start_now=true", json={"name": unique("inline"), "pipeline": pipeline, "inputs": inputs}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert finished(client, job_id)["status"] == "SUCCESS"
    return {i["name"]: i["result"] for i in all_items(client, job_id)}


def blob_path(server: Server, ref: str) -> Path:
    assert ref.startswith("blob:")
    return server.data_dir / "blobs" / ref[len("blob:") :]


def test_uploaded_open_job_keeps_no_bytes_in_the_database_and_runs(
    client: httpx.Client, server: Server
) -> None:
    pngs = [(f"{unique('d')}.png", png) for _, png, _ in holdout_pngs(limit=4)]
    assert all(len(png) > 2 * CHUNK for _, png in pngs)
    job_id = upload_open_job(client, "digits", pngs)
    assert finished(client, job_id)["status"] == "SUCCESS"

    stored = rows(
        server,
        "SELECT name, data, ref, sha256, byte_size, source FROM items WHERE job_id = :j ORDER BY seq",
        j=job_id,
    )
    assert [r.name for r in stored] == [name for name, _ in pngs]
    for row, (_, png) in zip(stored, pngs, strict=True):
        assert row.data is None  # no bytes in the database
        assert row.ref.startswith("blob:jobs/")
        assert (row.sha256, row.byte_size) == (hashlib.sha256(png).hexdigest(), len(png))
        assert blob_path(server, row.ref).read_bytes() == png
    (prefix,) = rows(server, "SELECT blob_prefix FROM jobs WHERE id = :j", j=job_id)[0]
    assert prefix and all(r.ref.startswith(f"blob:{prefix}/") for r in stored)
    assert rows(server, "SELECT COUNT(*) FROM job_uploads WHERE job_id = :j", j=job_id)[0][0] == 0

    # Same predictions as the same files given inline.
    results = {i["name"]: i["result"] for i in all_items(client, job_id)}
    assert results == inline_results(client, "digits", pngs)

    # The signed media URL (processing services) serves the bytes from the blob store.
    store = Store(Settings(data_dir=server.data_dir))
    try:
        secret = store.processing_services.secret(media.SECRET_NAME)
        first_id = rows(server, "SELECT id FROM items WHERE job_id = :j AND seq = 0", j=job_id)[0][0]
    finally:
        store.close()
    served = httpx.get(media.signed_url(server.url, secret, first_id, 60))
    assert served.status_code == 200 and served.content == pngs[0][1]
    assert served.headers["content-type"] == "image/png"

    # Deleting the job deletes its blobs.
    job_dir = server.data_dir / "blobs" / prefix
    assert job_dir.is_dir()
    assert client.delete(f"{JOBS}{job_id}/").status_code == 204
    assert not job_dir.exists()
    assert all(not blob_path(server, r.ref).exists() for r in stored)


def test_a_refused_close_writes_no_blobs_and_keeps_the_job_open(client: httpx.Client, server: Server) -> None:
    root = server.data_dir / "blobs"
    before = sorted(root.rglob("*")) if root.exists() else []
    opened = client.post("/api/jobs", json={"model": {"identifier": "digits", "version": "1"}})
    ident = opened.json()["jobIdentifier"]
    for input_name in ("front", "back"):  # two inputs of one item: digits takes one
        sent = client.post(f"/api/jobs/{ident}/a/{input_name}", files={"input": ("c", b"\x89PNG bytes")})
        assert sent.status_code in (200, 201), sent.text
    refused = client.post(f"/api/jobs/{ident}/close")
    assert refused.status_code == 400 and "one input per item" in refused.text
    job_id = job_id_for(server, ident)
    assert rows(server, "SELECT blob_prefix, status FROM jobs WHERE id = :j", j=job_id)[0] == (
        None,
        "CREATED",
    )
    assert rows(server, "SELECT COUNT(*) FROM job_uploads WHERE job_id = :j", j=job_id)[0][0] == 2
    assert (sorted(root.rglob("*")) if root.exists() else []) == before
    assert client.delete(f"/api/jobs/{ident}").status_code == 200  # cancel drops the staged chunks


def create_collection(client: httpx.Client) -> int:
    response = client.post(COLLECTIONS, json={"name": unique("coll")})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_collection_items_live_in_the_blob_store_and_jobs_copy_no_bytes(
    client: httpx.Client, server: Server
) -> None:
    cid = create_collection(client)
    pngs = [(f"{unique('c')}.png", png) for _, png, _ in holdout_pngs(limit=3)]
    inputs = [{"name": name, "kind": "base64", "data": b64(png)} for name, png in pngs]
    added = client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": inputs})
    assert added.status_code == 201, added.text
    upload = client.post(f"{COLLECTIONS}{cid}/items/upload/", files=[("files", ("up.png", pngs[0][1]))])
    assert upload.status_code == 201, upload.text
    stored = rows(
        server,
        "SELECT id, name, data, ref, sha256, byte_size FROM collection_items "
        "WHERE collection_id = :c ORDER BY id",
        c=cid,
    )
    assert [r.name for r in stored] == [*(name for name, _ in pngs), "up.png"]
    for row, png in zip(stored, [*(p for _, p in pngs), pngs[0][1]], strict=True):
        assert row.data == b"" and row.ref.startswith(f"blob:collections/{cid}/")
        assert (row.sha256, row.byte_size) == (hashlib.sha256(png).hexdigest(), len(png))
        assert blob_path(server, row.ref).read_bytes() == png

    response = client.post(
        JOBS + "?start_now=true", json={"name": unique("over"), "pipeline": "digits", "collection_id": cid}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert finished(client, job_id)["status"] == "SUCCESS"
    items = rows(
        server, "SELECT name, data, ref, byte_size FROM items WHERE job_id = :j ORDER BY seq", j=job_id
    )
    assert [(i.data, i.ref) for i in items] == [(None, f"collection-item:{r.id}") for r in stored]
    assert [i.byte_size for i in items] == [r.byte_size for r in stored]
    results = {i["name"]: i["result"] for i in all_items(client, job_id)}
    expected = inline_results(client, "digits", pngs)
    assert {name: results[name] for name, _ in pngs} == expected
    assert results["up.png"] == expected[pngs[0][0]]

    # The media route serves a job item that refers to a stored item.
    store = Store(Settings(data_dir=server.data_dir))
    try:
        secret = store.processing_services.secret(media.SECRET_NAME)
        first_id = rows(server, "SELECT id FROM items WHERE job_id = :j AND seq = 0", j=job_id)[0][0]
    finally:
        store.close()
    assert httpx.get(media.signed_url(server.url, secret, first_id, 60)).content == pngs[0][1]

    # Deleting the collection deletes its blobs; the finished job keeps its results.
    assert client.delete(f"{COLLECTIONS}{cid}/").status_code == 204
    assert not (server.data_dir / "blobs" / "collections" / str(cid)).exists()
    assert {i["name"]: i["result"] for i in all_items(client, job_id)} == results
    assert httpx.get(media.signed_url(server.url, secret, first_id, 60)).status_code == 404


def test_tiny_stored_items_stay_in_the_row(client: httpx.Client, server: Server) -> None:
    cid = create_collection(client)
    inputs = [
        {"name": "tiny", "kind": "text", "data": "hi"},
        {"name": "long", "kind": "text", "data": "x" * 40},
    ]
    assert client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": inputs}).status_code == 201
    stored = rows(
        server, "SELECT name, data, ref FROM collection_items WHERE collection_id = :c ORDER BY id", c=cid
    )
    assert [(r.name, bytes(r.data), r.ref is None) for r in stored] == [
        ("tiny", b"hi", True),
        ("long", b"", False),
    ]
    response = client.post(
        JOBS + "?start_now=true",
        json={"name": unique("tiny"), "pipeline": "test-delay", "collection_id": cid},
    )
    job_id = response.json()["id"]
    assert finished(client, job_id)["status"] == "SUCCESS"
    assert [i["result"] for i in all_items(client, job_id)] == [{"bytes": 2}, {"bytes": 40}]


def test_a_deleted_stored_item_fails_the_job_item_that_refers_to_it(
    client: httpx.Client, server: Server
) -> None:
    cid = create_collection(client)
    added = client.post(
        f"{COLLECTIONS}{cid}/items/", json={"inputs": [{"name": "gone", "kind": "text", "data": "y" * 50}]}
    )
    item_id = added.json()["ids"][0]
    response = client.post(
        JOBS, json={"name": unique("single"), "pipeline": "test-delay", "source_image_single_id": item_id}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]  # created, not queued yet
    assert client.delete(f"{COLLECTIONS}{cid}/").status_code == 204
    assert client.post(f"{JOBS}{job_id}/run/").status_code in (200, 202, 204)
    job = finished(client, job_id)
    assert job["status"] == "FAILURE"
    (item,) = all_items(client, job_id)
    assert item["status"] == "FAILURE" and item["error"].startswith("input_unavailable: ")
    assert f"Stored item {item_id} no longer exists" in item["error"]


# ---------------------------------------------------------------------------- S3 blob store
@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    boto3 = pytest.importorskip("boto3")
    with moto_s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
        s3.create_bucket(Bucket="conveyor-blobs")
        env = {
            "CONVEYOR_BLOB_URL": "s3://conveyor-blobs/deploy/blobs",
            "CONVEYOR_S3_ENDPOINT_URL": endpoint,
            "CONVEYOR_S3_REGION": CREDENTIALS["region_name"],
            "CONVEYOR_S3_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "CONVEYOR_S3_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "CONVEYOR_BLOB_INLINE_BYTES": str(INLINE_BYTES),
        }
        started = start_server(tmp_path_factory.mktemp("blobs-s3"), workers=1, extra_env=env)
        SERVERS[started.url] = started
        try:
            yield started, s3
        finally:
            started.stop()


def keys(s3: Any, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket="conveyor-blobs", Prefix=prefix)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def test_a_server_with_an_s3_blob_url_stores_blobs_in_s3(s3_server: tuple[Server, Any]) -> None:
    server, s3 = s3_server
    pngs = [(f"{unique('s')}.png", png) for _, png, _ in holdout_pngs(limit=2)]
    with server.client() as client:
        job_id = upload_open_job(client, "digits", pngs)
        assert finished(client, job_id)["status"] == "SUCCESS"
        (prefix,) = rows(server, "SELECT blob_prefix FROM jobs WHERE id = :j", j=job_id)[0]
        stored = rows(server, "SELECT data, ref FROM items WHERE job_id = :j ORDER BY seq", j=job_id)
        assert all(r.data is None for r in stored)
        assert keys(s3, f"deploy/blobs/{prefix}/") == [
            f"deploy/blobs/{r.ref[len('blob:') :]}" for r in stored
        ]
        for row, (_, png) in zip(stored, pngs, strict=True):
            body = s3.get_object(Bucket="conveyor-blobs", Key=f"deploy/blobs/{row.ref[len('blob:') :]}")[
                "Body"
            ]
            assert body.read() == png
        assert not (server.data_dir / "blobs").exists()  # nothing on the server's disk
        assert {i["name"]: i["result"] for i in all_items(client, job_id)} == inline_results(
            client, "digits", pngs
        )

        cid = create_collection(client)
        inputs = [{"name": name, "kind": "base64", "data": b64(png)} for name, png in pngs]
        assert client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": inputs}).status_code == 201
        assert len(keys(s3, f"deploy/blobs/collections/{cid}/")) == 2

        assert client.delete(f"{JOBS}{job_id}/").status_code == 204
        assert keys(s3, f"deploy/blobs/{prefix}/") == []
        assert client.delete(f"{COLLECTIONS}{cid}/").status_code == 204
        assert keys(s3, f"deploy/blobs/collections/{cid}/") == []


def test_inline_base64_inputs_go_to_the_blob_store_and_a_refused_job_leaves_none(
    client: httpx.Client, server: Server
) -> None:
    pngs = [(f"{unique('i')}.png", png) for _, png, _ in holdout_pngs(limit=3)]
    tiny = ("tiny.txt", b"hi")  # at most CONVEYOR_BLOB_INLINE_BYTES: stays in the row
    inputs = [{"name": name, "kind": "base64", "data": b64(data)} for name, data in [*pngs, tiny]]
    response = client.post(
        JOBS + "?start_now=true", json={"name": unique("b64"), "pipeline": "test-delay", "inputs": inputs}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert finished(client, job_id)["status"] == "SUCCESS"
    stored = rows(
        server, "SELECT name, data, ref, sha256 FROM items WHERE job_id = :j ORDER BY seq", j=job_id
    )
    for row, (_, png) in zip(stored, pngs, strict=False):
        assert row.data is None and row.sha256 == hashlib.sha256(png).hexdigest()
        assert blob_path(server, row.ref).read_bytes() == png
    assert (stored[-1].data, stored[-1].ref) == (b"hi", None)
    # test-delay answers the byte size of what it was given: the workers read the blobs.
    assert [i["result"]["bytes"] for i in all_items(client, job_id)] == [len(p) for _, p in pngs] + [2]

    before = sorted((server.data_dir / "blobs").rglob("*"))
    bad = [*inputs[:2], {"name": "broken", "kind": "base64", "data": "%%% not base64"}]
    refused = client.post(JOBS, json={"name": unique("b64-bad"), "pipeline": "test-delay", "inputs": bad})
    assert refused.status_code == 400 and "broken" in refused.text
    assert sorted((server.data_dir / "blobs").rglob("*")) == before  # nothing written is left behind
