"""Collections of stored inputs: create, fill, list, page, delete, and jobs over them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from conveyor.clock import utcnow
from conveyor.pipelines.digits import holdout_pngs
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.tables import accounts
from tests.helpers import Server, run_cli
from tests.helpers.api import JOBS, all_items, assert_error, b64, count_named, finished, unique
from tests.helpers.inputs import (
    INPUT_CAP,
    FileServer,
    module_fixture,
    serve_files,
    serve_inputs,
    staged_leftovers,
)

COLLECTIONS = "/api/v2/collections/"
files = module_fixture(serve_files)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def inputs_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from serve_inputs(tmp_path_factory, backend=request.param)


@pytest.fixture
def client(inputs_server: Server) -> Iterator[httpx.Client]:
    with inputs_server.client() as c:
        yield c


def create(client: httpx.Client, name: str | None = None, **body: Any) -> dict[str, Any]:
    response = client.post(COLLECTIONS, json={"name": name or unique("coll"), **body})
    assert response.status_code == 201, response.text
    collection: dict[str, Any] = response.json()
    return collection


def add(client: httpx.Client, collection_id: int, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"{COLLECTIONS}{collection_id}/items/", json={"inputs": inputs})
    assert response.status_code == 201, response.text
    added: dict[str, Any] = response.json()
    return added


def texts(n: int, prefix: str = "t") -> list[dict[str, str]]:
    return [{"name": f"{prefix}{i}", "kind": "text", "data": f"{prefix} {i}"} for i in range(n)]


def run_over(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(
        JOBS + "?start_now=true", json={"name": unique("over"), "pipeline": "test-delay", **body}
    )


def test_collection_lifecycle_and_listing(
    client: httpx.Client, inputs_server: Server, files: FileServer
) -> None:
    collection = create(client, description="moths")
    assert collection["item_count"] == 0 and collection["description"] == "moths"
    cid = collection["id"]
    pngs = holdout_pngs(limit=3)
    url = files.add("/coll/one.png", pngs[2][1])
    added = add(
        client,
        cid,
        [
            {"name": pngs[0][0], "kind": "base64", "data": b64(pngs[0][1])},
            {"kind": "url", "data": url},
        ],
    )
    assert added["added"] == 2 and added["collection"]["item_count"] == 2
    uploaded = client.post(f"{COLLECTIONS}{cid}/items/upload/", files=[("files", ("../up.png", pngs[1][1]))])
    assert uploaded.status_code == 201, uploaded.text
    assert staged_leftovers(inputs_server) == []
    detail = client.get(f"{COLLECTIONS}{cid}/").json()
    assert detail["item_count"] == 3
    assert detail["byte_size"] == len(pngs[0][1]) + len(pngs[2][1]) + len(pngs[1][1])
    page = client.get(f"{COLLECTIONS}{cid}/items/", params={"limit": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    rest = client.get(page["next"]).json()
    items = page["results"] + rest["results"]
    assert [(i["name"], i["kind"], i["source"]) for i in items] == [
        (pngs[0][0], "base64", None),
        ("one.png", "base64", url),
        ("up.png", "base64", "upload:up.png"),
    ]
    one = client.get(f"{COLLECTIONS}{cid}/items/{items[1]['id']}/").json()
    assert one["byte_size"] == len(pngs[2][1])
    # Listing pages newest first and filters by project.
    second = create(client)
    listed = client.get(COLLECTIONS, params={"limit": 1}).json()
    assert listed["results"][0]["id"] == second["id"] and listed["next"]
    project = collection["project"]["id"]
    assert client.get(COLLECTIONS, params={"project": project + 999}).json()["count"] == 0
    # Delete: gone, with its items.
    assert client.delete(f"{COLLECTIONS}{second['id']}/").status_code == 204
    assert_error(client.get(f"{COLLECTIONS}{second['id']}/"), 404)
    assert_error(client.get(f"{COLLECTIONS}{second['id']}/items/"), 404)


def test_job_over_a_collection_runs_its_items_and_names_it(client: httpx.Client) -> None:
    collection = create(client)
    cid = collection["id"]
    pngs = holdout_pngs(limit=5)
    add(client, cid, [{"name": n, "kind": "base64", "data": b64(d)} for n, d, _ in pngs])
    response = client.post(
        JOBS + "?start_now=true",
        json={"name": unique("digits-over"), "pipeline": "digits", "collection_id": cid},
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["source_image_collection"]["id"] == cid
    assert job["source_image_collection"]["name"] == collection["name"]
    assert job["source_image_collection"]["method"] == "all"
    assert job["source_image_collection"]["details"].endswith(f"/api/v2/collections/{cid}/")
    assert job["source_image_single"] is None
    assert job["total"] == 5 and job["input_byte_amount"] == sum(len(d) for _, d, _ in pngs)
    assert finished(client, job["id"])["status"] == "SUCCESS"
    items = all_items(client, job["id"])
    assert [i["name"] for i in items] == [n for n, _, _ in pngs]
    assert all(i["source"].startswith(f"collection:{cid}/") for i in items)
    assert sum(i["result"]["label"] == label for i, (_, _, label) in zip(items, pngs, strict=True)) >= 4
    # The history shows it too.
    listed = client.get(JOBS, params={"search": job["name"]}).json()["results"][0]
    assert listed["source_image_collection"]["id"] == cid


@pytest.mark.parametrize(
    ("method", "limit", "shuffle", "check"),
    [
        ("all", None, False, lambda names: names == [f"s{i}" for i in range(10)]),
        ("all", 3, False, lambda names: names == ["s0", "s1", "s2"]),
        ("first", None, False, lambda names: names == ["s0"]),
        ("first", 4, False, lambda names: names == ["s0", "s1", "s2", "s3"]),
        ("random", 4, False, lambda names: len(set(names)) == 4),
        ("random", None, False, lambda names: sorted(names) == sorted(f"s{i}" for i in range(10))),
        ("last_and_random", 3, False, lambda names: names[0] == "s9" and len(set(names)) == 3),
        ("all", None, True, lambda names: sorted(names) == sorted(f"s{i}" for i in range(10))),
        ("all", 100, False, lambda names: len(names) == 10),
    ],
)
def test_sampling_methods(
    client: httpx.Client, method: str, limit: int | None, shuffle: bool, check: Any
) -> None:
    cid = create(client)["id"]
    add(client, cid, texts(10, prefix="s"))
    body: dict[str, Any] = {"collection_id": cid, "method": method, "shuffle": shuffle}
    if limit is not None:
        body["limit"] = limit
    response = run_over(client, **body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["source_image_collection"]["method"] == method and job["limit"] == limit
    names = [i["name"] for i in all_items(client, job["id"])]
    assert check(names), names


def test_job_over_one_stored_item(client: httpx.Client) -> None:
    cid = create(client)["id"]
    ids = add(client, cid, texts(3, prefix="one"))["ids"]
    response = run_over(client, source_image_single_id=ids[1])
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["source_image_single"] == {
        "id": ids[1],
        "name": "one1",
        "details": job["source_image_single"]["details"],
        "collection_id": cid,
        "user_permissions": [],
    }
    assert job["source_image_single"]["details"].endswith(f"/api/v2/collections/{cid}/items/{ids[1]}/")
    assert job["source_image_collection"] is None
    assert finished(client, job["id"])["status"] == "SUCCESS"
    assert [i["name"] for i in all_items(client, job["id"])] == ["one1"]


def test_deleting_a_collection_under_a_running_job_is_409(client: httpx.Client) -> None:
    cid = create(client)["id"]
    add(client, cid, texts(2))
    job = run_over(client, collection_id=cid, config={"item_seconds": 30}).json()
    error = assert_error(client.delete(f"{COLLECTIONS}{cid}/"), 409)
    assert str(job["id"]) in error["message"]
    assert client.post(f"{JOBS}{job['id']}/cancel/").status_code == 200
    finished(client, job["id"])
    assert client.delete(f"{COLLECTIONS}{cid}/").status_code == 204
    kept = client.get(f"{JOBS}{job['id']}/").json()  # the finished job still names its source
    assert kept["source_image_collection"]["id"] == cid


def test_bad_collection_requests(client: httpx.Client, files: FileServer, inputs_server: Server) -> None:
    cid = create(client)["id"]
    empty = create(client)["id"]
    add(client, cid, texts(1))
    name = unique("bad-over")
    bad_jobs: list[tuple[int, dict[str, Any]]] = [
        (404, {"collection_id": 987654}),
        (404, {"source_image_single_id": 987654}),
        (400, {"collection_id": empty}),
        (400, {"collection_id": cid, "inputs": texts(1)}),
        (400, {"collection_id": cid, "source_image_single_id": 1}),
        (400, {"method": "random", "inputs": texts(1)}),
        (422, {"collection_id": cid, "method": "sideways"}),
    ]
    for status, body in bad_jobs:
        response = client.post(JOBS, json={"name": name, "pipeline": "test-delay", **body})
        assert_error(response, status)
    assert count_named(client, name) == 0
    # Adding: oversized, unreachable URL, empty list, unknown collection -- nothing is stored.
    before = client.get(f"{COLLECTIONS}{cid}/").json()["item_count"]
    too_big = [*texts(1), {"name": "big", "kind": "text", "data": "x" * (INPUT_CAP + 1)}]
    assert_error(client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": too_big}), 413)
    gone = [*texts(1), {"name": "gone", "kind": "url", "data": files.base + "/nope.png"}]
    error = assert_error(client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": gone}), 400)
    assert "'gone'" in error["message"]
    assert_error(client.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": []}), 422)
    assert_error(client.post(f"{COLLECTIONS}987654/items/", json={"inputs": texts(1)}), 404)
    big_file = [("files", ("big.bin", b"x" * (INPUT_CAP + 1)))]
    assert_error(client.post(f"{COLLECTIONS}{cid}/items/upload/", files=big_file), 413)
    assert client.get(f"{COLLECTIONS}{cid}/").json()["item_count"] == before
    assert staged_leftovers(inputs_server) == []
    assert_error(client.post(COLLECTIONS, json={"name": ""}), 422)
    assert_error(client.post(COLLECTIONS, json={"name": "x", "project_id": 987654}), 404)


def test_collections_are_tenant_scoped(client: httpx.Client, inputs_server: Server) -> None:
    mine = create(client)
    ids = add(client, mine["id"], texts(1))["ids"]
    database_url = inputs_server.env.get("CONVEYOR_DATABASE_URL")
    store = Store(Settings(data_dir=inputs_server.data_dir, database_url=database_url))
    try:
        with store.db.write() as conn:
            other = conn.execute(
                insert(accounts)
                .values(slug=unique("acct"), name="Other", created_at=utcnow())
                .returning(accounts.c.id)
            ).scalar_one()
        store.auth.ensure_project(other, "theirs")
        token = store.auth.create_key(account_id=other, name="other", role="owner", project_id=None).token
    finally:
        store.close()
    with inputs_server.client(token) as foreign:
        cid = mine["id"]
        assert_error(foreign.get(f"{COLLECTIONS}{cid}/"), 404)
        assert_error(foreign.get(f"{COLLECTIONS}{cid}/items/"), 404)
        assert_error(foreign.get(f"{COLLECTIONS}{cid}/items/{ids[0]}/"), 404)
        assert_error(foreign.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": texts(1)}), 404)
        assert_error(foreign.delete(f"{COLLECTIONS}{cid}/"), 404)
        assert_error(run_over(foreign, collection_id=cid), 404)
        assert_error(run_over(foreign, source_image_single_id=ids[0]), 404)
        assert cid not in [
            c["id"] for c in foreign.get(COLLECTIONS, params={"limit": 1000}).json()["results"]
        ]
    assert client.get(f"{COLLECTIONS}{cid}/").json()["item_count"] == 1


def test_viewer_cannot_change_collections(client: httpx.Client, inputs_server: Server) -> None:
    cid = create(client)["id"]
    viewer = inputs_server.create_key(role="viewer")
    with inputs_server.client(viewer) as read_only:
        assert read_only.get(f"{COLLECTIONS}{cid}/").status_code == 200
        assert_error(read_only.post(COLLECTIONS, json={"name": "v"}), 403)
        assert_error(read_only.post(f"{COLLECTIONS}{cid}/items/", json={"inputs": texts(1)}), 403)
        assert_error(read_only.delete(f"{COLLECTIONS}{cid}/"), 403)
    assert json.dumps(client.get(f"{COLLECTIONS}{cid}/").json())


def test_python_client_collections(inputs_server: Server, tmp_path: Any) -> None:
    from conveyor.client import ConveyorClient, text_input

    picture = tmp_path / "seven.png"
    picture.write_bytes(holdout_pngs(limit=1)[0][1])
    with ConveyorClient(inputs_server.url, inputs_server.key) as conveyor:
        collection = conveyor.create_collection(unique("client-coll"))
        conveyor.add_to_collection(collection["id"], [text_input("alpha", name="a")])
        conveyor.upload_to_collection(collection["id"], [picture])
        names = [i["name"] for i in conveyor.iter_collection_items(collection["id"], page_size=1)]
        assert names == ["a", "seven.png"]
        assert collection["id"] in [c["id"] for c in conveyor.collections()]
        job = conveyor.submit("test-delay", collection_id=collection["id"], method="first", limit=2)
        assert conveyor.wait(job["id"])["status"] == "SUCCESS"
        assert job["source_image_collection"]["method"] == "first" and job["total"] == 2
        cli = run_cli(
            ["submit", "test-delay", "--collection", str(collection["id"]), "--method", "random", "--json"],
            inputs_server.env,
        )
        assert cli.returncode == 0, cli.stderr
        final = json.loads(cli.stdout)
        assert final["status"] == "SUCCESS" and final["total"] == 2
        assert final["source_image_collection"]["method"] == "random"
        conveyor.delete_collection(collection["id"])


def test_job_over_a_collection_is_held_to_the_job_caps(client: httpx.Client) -> None:
    """The caps are checked on the chosen items' sizes before their bytes are read."""
    many = create(client)["id"]
    add(client, many, texts(11, prefix="a"))  # 21 items, over CONVEYOR_MAX_INPUTS_PER_JOB=20 (which
    add(client, many, texts(10, prefix="b"))  # also caps one request that adds items)
    name = unique("capped-over")
    assert_error(client.post(JOBS, json={"name": name, "pipeline": "test-delay", "collection_id": many}), 413)
    heavy = create(client)["id"]
    for index in range(3):  # 3 x 1900 bytes: each under the input cap, together over the 5000-byte job cap
        add(client, heavy, [{"name": f"h{index}", "kind": "text", "data": "h" * 1900}])
    error = assert_error(
        client.post(JOBS, json={"name": name, "pipeline": "test-delay", "collection_id": heavy}), 413
    )
    assert "limit" in error["message"]
    assert count_named(client, name) == 0
    assert run_over(client, collection_id=many, limit=20).status_code == 201
    assert run_over(client, collection_id=heavy, limit=2).status_code == 201
