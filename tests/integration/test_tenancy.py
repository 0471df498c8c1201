"""Multi-tenancy: another account's key finds nothing of ours on ANY route (walked from the OpenAPI
document, so routes added later are covered too), owners manage keys, viewers cannot act."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.helpers import Server, run_cli
from tests.helpers.api import JOBS, assert_error, finished, submit, unique

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _key_in_account(server: Server, account: str, role: str = "owner", **extra: str) -> str:
    return server.create_key(role=role, name=unique("tenant"), account=account, **extra)


def _routes(server: Server) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _call(client: httpx.Client, method: str, path: str) -> tuple[int, str]:
    """Status and (the start of) the body; an event stream is read for a moment, not forever."""
    body: dict[str, Any] | None = {} if method in {"POST", "PUT", "PATCH"} else None
    with client.stream(method, path, json=body, timeout=httpx.Timeout(10, read=2)) as response:
        text = b""
        try:
            for chunk in response.iter_bytes():
                text += chunk
                if len(text) > 2_000_000:
                    break
        except httpx.ReadTimeout:
            pass  # a live stream with nothing (of ours) to say
        return response.status_code, text.decode(errors="replace")


@pytest.fixture(scope="module")
def ours(shared_server: Server) -> dict[str, Any]:
    """Account A's objects, and the strings that must never reach account B."""
    tag = unique("tenant-a")
    with shared_server.client() as a:
        done = finished(a, submit(a, name=f"{tag}-done", n=3)["id"])
        created = submit(a, name=f"{tag}-created", start_now=False)
        opened = a.post("/api/jobs", json={"model": {"identifier": "test-delay", "version": "1"}}).json()
        staged = a.post(f"/api/jobs/{opened['jobIdentifier']}/{tag}-item/input", files={"input": b"secret"})
        assert staged.status_code == 200, staged.text
        modzy = a.post(
            "/api/jobs",
            json={
                "model": {"identifier": "test-delay", "version": "1"},
                "input": {"type": "text", "sources": {f"{tag}-src": {"input": "ours"}}},
            },
        ).json()
        key_prefix = shared_server.key.split(".")[0]
        item_id = a.get(f"{JOBS}{done['id']}/items/").json()["results"][0]["id"]
        collection = a.post("/api/v2/collections/", json={"name": f"{tag}-collection"})
        assert collection.status_code == 201, collection.text
        stored = a.post(
            f"/api/v2/collections/{collection.json()['id']}/items/",
            json={"inputs": [{"name": f"{tag}-stored", "kind": "text", "data": "ours"}]},
        )
        assert stored.status_code == 201, stored.text
        return {
            "tag": tag,
            "job": done,
            "created": created,
            "opened": opened,
            "modzy": modzy,
            "prefix": key_prefix,
            "ids": {
                "job_id": done["id"],
                "job_identifier": modzy["jobIdentifier"],
                "project_id": done["project"]["id"],
                "pipeline_id": done["pipeline"]["id"],
                "prefix": key_prefix,
                "identifier": "test-delay",
                "version": "1",
                "item": f"{tag}-item",
                "input_name": "input",
                "item_id": item_id,  # a job item of A's (the collection routes reject it as absent too)
                "collection_id": collection.json()["id"],
            },
            # Anything of A's that could show up in a response body.
            "markers": [
                tag,
                done["job_identifier"],
                created["job_identifier"],
                opened["jobIdentifier"],
                modzy["jobIdentifier"],
                key_prefix,
                f"{tag}-collection",
                f"{tag}-stored",
            ],
        }


def test_a_foreign_key_finds_nothing_on_any_route(shared_server: Server, ours: dict[str, Any]) -> None:
    other = _key_in_account(shared_server, unique("acct"))
    ids: dict[str, Any] = ours["ids"]
    routes = _routes(shared_server)
    walked: list[str] = []
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Token {other}"}) as them:
        # B has data of its own, in its own account's default project (never in A's).
        theirs = submit(them, name=unique("tenant-b"), n=1)
        assert theirs["project"]["id"] != ids["project_id"]
        for method, template in routes:
            if template in ("/livez", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"):
                continue
            names = re.findall(r"\{(\w+)\}", template)
            path = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), "unknown")), template)
            status, text = _call(them, method, path)
            walked.append(f"{method} {template} -> {status}")
            # (A 404 may echo what the caller itself put in the path: that tells it nothing.)
            leaked = [m for m in ours["markers"] if m in text and m not in path]
            assert not leaked, (method, path, status, leaked, text[:300])
            assert status != 403, (method, path, "a foreign object must look absent (404), not forbidden")
            assert status < 500, (method, path, status, text[:300])
            # A route naming one of A's jobs (or keys, or projects) must say it does not exist.
            if {"job_id", "job_identifier", "prefix", "project_id"} & set(names):
                # 400/422: a body this walk does not fill was refused before the lookup; still nothing leaked.
                assert status in (404, 400, 422), (method, path, status, text[:300])
                if method == "GET":
                    assert status == 404, (method, path, status, text[:300])
        # Filters pointing at A's objects select nothing.
        assert them.get(JOBS, params={"submitted_by": ours["prefix"]}).json()["count"] == 0
        assert them.get(JOBS, params={"search": ours["tag"]}).json()["count"] == 0
        project_filter = them.get(JOBS, params={"project": ids["project_id"]})
        assert project_filter.status_code == 404 or project_filter.json()["count"] == 0
        assert (
            them.get("/api/jobs/history", params={"accessKey": ours["prefix"], "per-page": 100}).json() == []
        )
        assert all(p["id"] != ids["project_id"] for p in them.get("/api/v2/projects/").json())
        # Submitting into A's project is refused as "not found".
        into_a = them.post(
            JOBS,
            json={
                "name": unique("b"),
                "pipeline": "test-delay",
                "project_id": ids["project_id"],
                "inputs": [{"name": "x", "kind": "text", "data": "x"}],
            },
        )
        assert_error(into_a, 404)
    assert any("/api/jobs/" in w for w in walked) and any("/api/v2/jobs/" in w for w in walked)

    # Nothing of A's moved: B's cancels, deletes, retries, closes and revokes all missed.
    with shared_server.client() as a:
        assert a.get(f"{JOBS}{ours['job']['id']}/").json()["status"] == "SUCCESS"
        assert a.get(f"{JOBS}{ours['created']['id']}/").json()["status"] == "CREATED"
        assert a.get(f"/api/jobs/{ours['opened']['jobIdentifier']}").json()["status"] == "OPEN"
        assert a.get("/api/v2/keys/").status_code == 200  # A's key was not revoked
        a.delete(f"/api/jobs/{ours['opened']['jobIdentifier']}")
        a.post(f"{JOBS}{ours['created']['id']}/cancel/")


def test_viewer_cannot_act_in_the_modzy_dialect(shared_server: Server, ours: dict[str, Any]) -> None:
    viewer = shared_server.create_key(role="viewer", name=unique("viewer"))
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"ApiKey {viewer}"}) as v:
        assert v.get(f"/api/jobs/{ours['modzy']['jobIdentifier']}").status_code == 200
        assert v.get(f"/api/results/{ours['modzy']['jobIdentifier']}").status_code == 200
        body = {"model": {"identifier": "test-delay", "version": "1"}}
        refused = [
            v.post("/api/jobs", json={**body, "input": {"type": "text", "sources": {"a": {"i": "x"}}}}),
            v.post("/api/jobs", json=body),
            v.delete(f"/api/jobs/{ours['modzy']['jobIdentifier']}"),
            v.post(f"/api/jobs/{ours['modzy']['jobIdentifier']}/close"),
            v.post(f"/api/jobs/{ours['modzy']['jobIdentifier']}/a/input", files={"input": b"x"}),
            v.get("/api/v2/keys/"),
            v.post("/api/v2/keys/", json={"name": "escalate", "role": "owner"}),
        ]
        for response in refused:
            error = assert_error(response, 403)
            assert "viewer" in error["message"], error


def test_owners_manage_keys_members_do_not(shared_server: Server) -> None:
    with shared_server.client() as owner:
        made = owner.post("/api/v2/keys/", json={"name": unique("made"), "role": "member"})
        assert made.status_code == 201, made.text
        created = made.json()
        token, prefix = created["key"], created["prefix"]
        assert token.startswith(prefix + ".") and created["last_used_at"] is None

        with shared_server.client(token) as member:
            job = submit(member, name=unique("member-job"), n=1)
            assert job["submitted_by"] == prefix
            assert_error(member.get("/api/v2/keys/"), 403)
            assert_error(member.post("/api/v2/keys/", json={"name": "x", "role": "owner"}), 403)
            assert_error(member.delete(f"/api/v2/keys/{shared_server.key.split('.')[0]}/"), 403)

        listed = {k["prefix"]: k for k in owner.get("/api/v2/keys/").json()}
        assert listed[prefix]["last_used_at"] is not None and listed[prefix]["role"] == "member"
        assert all("key" not in k and "secret_hash" not in k for k in listed.values())
        assert token.split(".")[1] not in owner.get("/api/v2/keys/").text

        assert owner.delete(f"/api/v2/keys/{prefix}/").status_code == 204
        assert_error(owner.delete(f"/api/v2/keys/{prefix}/"), 404)
        with shared_server.client(token) as revoked:
            assert_error(revoked.get(JOBS), 401)
        after = {k["prefix"]: k for k in owner.get("/api/v2/keys/").json()}
        assert after[prefix]["revoked_at"] is not None

        short = owner.post("/api/v2/keys/", json={"name": "short", "expires_in_days": 2 / 86400}).json()
        with shared_server.client(short["key"]) as brief:
            assert brief.get(JOBS, params={"limit": 1}).status_code == 200
            time.sleep(2.2)
            assert "expired" in assert_error(brief.get(JOBS), 401)["message"]
        assert_error(owner.post("/api/v2/keys/", json={"name": "x", "project": "no-such-project"}), 404)


def test_a_project_bound_owner_manages_only_its_project(shared_server: Server) -> None:
    slug = unique("proj")
    with shared_server.client() as owner:
        assert owner.post("/api/v2/projects/", json={"slug": slug}).status_code == 201
        bound = owner.post("/api/v2/keys/", json={"name": "bound", "role": "owner", "project": slug}).json()
    with shared_server.client(bound["key"]) as b:
        made = b.post("/api/v2/keys/", json={"name": "inside", "role": "viewer"}).json()
        assert made["project"] == slug
        assert {k["project"] for k in b.get("/api/v2/keys/").json()} == {slug}
        assert_error(b.delete(f"/api/v2/keys/{shared_server.key.split('.')[0]}/"), 404)
        assert_error(b.post("/api/v2/keys/", json={"name": "out", "project": "default"}), 404)
        assert_error(b.post("/api/v2/projects/", json={"slug": unique("p")}), 403)


def test_cli_lists_and_revokes_keys(shared_server: Server) -> None:
    account = unique("cli-acct")
    key = _key_in_account(shared_server, account, role="member", expires_days="30")
    prefix = key.split(".")[0]
    listing = run_cli(["keys", "list", "--account", account], shared_server.env)
    assert listing.returncode == 0, listing.stderr
    line = next(row for row in listing.stdout.splitlines() if row.startswith(prefix))
    assert "member" in line and "active" in line and key.split(".")[1] not in listing.stdout
    assert run_cli(["keys", "revoke", prefix, "--account", account], shared_server.env).returncode == 0
    with shared_server.client(key) as revoked:
        assert_error(revoked.get(JOBS), 401)
    # Another account cannot revoke it by prefix: the prefix is not found there.
    other = run_cli(["keys", "revoke", prefix], shared_server.env)
    assert other.returncode != 0


def test_memberships_give_a_key_a_role_per_project(shared_server: Server) -> None:
    first, second = unique("p1"), unique("p2")
    with shared_server.client() as owner:
        ids = {}
        for slug in (first, second):
            made = owner.post("/api/v2/projects/", json={"slug": slug})
            assert made.status_code == 201, made.text
            ids[slug] = made.json()["id"]
        # Bound to the first project as a viewer; then a member of the second one too.
        key = owner.post("/api/v2/keys/", json={"name": "multi", "role": "viewer", "project": first}).json()
        prefix = key["prefix"]
        assert (
            owner.put(
                f"/api/v2/projects/{ids[second]}/members/{prefix}/", json={"role": "member"}
            ).status_code
            == 204
        )
        members = owner.get(f"/api/v2/projects/{ids[second]}/members/").json()
        listed = {p["id"]: p["user_permissions"] for p in owner.get("/api/v2/projects/").json()}
        assert listed[ids[first]] == ["view", "submit", "manage"]
        assert [(m["prefix"], m["role"]) for m in members] == [(prefix, "member")]
        in_first = submit(owner, name=unique("in-first"), n=1, project_id=ids[first])
        in_second = submit(owner, name=unique("in-second"), n=1, project_id=ids[second], start_now=False)
        elsewhere = submit(owner, name=unique("elsewhere"), n=1)
        # An account-wide key needs no membership (its role holds everywhere): refused.
        assert_error(
            owner.put(
                f"/api/v2/projects/{ids[first]}/members/{shared_server.key.split('.')[0]}/",
                json={"role": "viewer"},
            ),
            409,
        )

    with shared_server.client(key["key"]) as multi:
        seen = {p["id"]: p["user_permissions"] for p in multi.get("/api/v2/projects/").json()}
        assert seen == {ids[first]: ["view"], ids[second]: ["view", "submit"]}  # the dashboard reads these
        assert_error(multi.get(f"{JOBS}{elsewhere['id']}/"), 404)
        assert multi.get(f"{JOBS}{in_first['id']}/").status_code == 200
        # Viewer in the first project, member in the second.
        assert "viewer" in assert_error(multi.post(f"{JOBS}{in_first['id']}/cancel/"), 403)["message"]
        assert_error(
            multi.post(
                JOBS,
                json={
                    "name": "x",
                    "pipeline": "test-delay",
                    "project_id": ids[first],
                    "inputs": [{"name": "a", "kind": "text", "data": "a"}],
                },
            ),
            403,
        )
        mine = submit(multi, name=unique("by-multi"), n=1, project_id=ids[second])
        assert mine["project"]["id"] == ids[second]
        assert multi.post(f"{JOBS}{in_second['id']}/cancel/").status_code == 200
        # Not an owner of the second project: cannot manage its members.
        assert_error(multi.get(f"/api/v2/projects/{ids[second]}/members/"), 403)

    with shared_server.client() as owner:
        assert owner.delete(f"/api/v2/projects/{ids[second]}/members/{prefix}/").status_code == 204
        assert_error(owner.delete(f"/api/v2/projects/{ids[second]}/members/{prefix}/"), 404)
    with shared_server.client(key["key"]) as multi:
        assert_error(multi.get(f"{JOBS}{mine['id']}/"), 404)
        assert [p["id"] for p in multi.get("/api/v2/projects/").json()] == [ids[first]]


def test_audit_records_who_did_what_and_when(shared_server: Server) -> None:
    owner_prefix = shared_server.key.split(".")[0]
    with shared_server.client() as owner:
        made = owner.post("/api/v2/keys/", json={"name": unique("audited"), "role": "member"}).json()
        prefix = made["prefix"]
        with shared_server.client(made["key"]) as member:
            job = submit(member, name=unique("audited-job"), start_now=False)
            assert member.post(f"{JOBS}{job['id']}/cancel/").status_code == 200
            assert member.delete(f"{JOBS}{job['id']}/").status_code == 204
            assert_error(member.get("/api/v2/audit/"), 403)
        assert owner.delete(f"/api/v2/keys/{prefix}/").status_code == 204

        rows: list[dict[str, Any]] = []
        after = 0
        while page := owner.get("/api/v2/audit/", params={"after": after, "limit": 500}).json():
            rows += page
            after = page[-1]["id"]
    target = f"job:{job['job_identifier']}"
    ours = [(r["actor"], r["action"], r["target"]) for r in rows if prefix in (r["actor"], r["target"][4:])]
    assert ours == [
        (owner_prefix, "key.create", f"key:{prefix}"),
        (prefix, "job.cancel", target),
        (prefix, "job.delete", target),  # the job is gone; its audit rows are not
        (owner_prefix, "key.revoke", f"key:{prefix}"),
    ]
    assert all(r["created_at"] for r in rows)
