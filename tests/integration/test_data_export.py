"""data_export jobs: several jobs' results in one file (JSON, JSON Lines, CSV) that parses back to
exactly the rows of each job's own results export; progress like any job; clear errors."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx

from tests.helpers import Server, run_cli
from tests.helpers.api import JOBS, all_items, assert_error, finished, submit, unique

EXPORTS = "/api/v2/exports/"


def own_results(client: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{JOBS}{job_id}/results/", params={"format": "jsonl"})
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def parse_csv(text: str) -> list[dict[str, Any]]:
    ints = ("job_id", "item_id", "seq", "duration_ms")
    return [
        {
            **row,
            **{k: int(row[k]) if row[k] else None for k in ints},
            "result": json.loads(row["result"]) if row["result"] else None,
            "error": row["error"] or None,
            "source": row["source"] or None,
        }
        for row in csv.DictReader(io.StringIO(text))
    ]


def source_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    """Two finished jobs: one all good, one with a failed item."""
    first = submit(client, name=unique("export-src"), n=4)
    second = submit(client, name=unique("export-src"), n=3, config={"fail_names": ["item-1"]})
    return [finished(client, first["id"]), finished(client, second["id"])]


def run_export(client: httpx.Client, job_ids: list[int], fmt: str) -> dict[str, Any]:
    created = client.post(EXPORTS, json={"job_ids": job_ids, "format": fmt})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    assert body["job_type"]["key"] == "data_export" and body["data_export"]["format"] == fmt
    return finished(client, body["id"])


def test_an_export_of_two_jobs_parses_back_to_their_results_in_every_format(shared_server: Server) -> None:
    with shared_server.client() as client:
        jobs = source_jobs(client)
        ids = [j["id"] for j in jobs]
        expected = own_results(client, ids[0]) + own_results(client, ids[1])
        assert len(expected) == 7 and sum(r["status"] == "FAILURE" for r in expected) == 1
        assert {r["job_id"] for r in expected} == set(ids) and all(r["item_id"] for r in expected)
        files: dict[str, str] = {}
        for fmt in ("csv", "json", "jsonl"):
            job = run_export(client, ids, fmt)
            assert job["status"] == "SUCCESS" and (job["total"], job["completed"]) == (2, 2), job
            assert job["data_export"]["file_url"].endswith(f"/api/v2/jobs/{job['id']}/export/")
            download = client.get(f"{JOBS}{job['id']}/export/")
            assert download.status_code == 200, download.text
            assert f'filename="export-{job["id"]}.{fmt}"' in download.headers["content-disposition"]
            files[fmt] = download.text
            parts = {i["name"]: i["result"] for i in all_items(client, job["id"])}
            assert parts == {
                f"job-{ids[0]}": {"job_id": ids[0], "rows": 4, "bytes": parts[f"job-{ids[0]}"]["bytes"]},
                f"job-{ids[1]}": {"job_id": ids[1], "rows": 3, "bytes": parts[f"job-{ids[1]}"]["bytes"]},
            }
    assert parse_csv(files["csv"]) == expected
    assert json.loads(files["json"]) == expected
    assert [json.loads(line) for line in files["jsonl"].splitlines()] == expected


def test_bad_exports_are_clear_errors_and_create_nothing(shared_server: Server) -> None:
    other = run_cli(["keys", "create", "--name", "other", "--account", unique("acct")], shared_server.env)
    assert other.returncode == 0, other.stderr
    with shared_server.client() as client:
        mine = finished(client, submit(client, name=unique("export-src"), n=1)["id"])
        before = client.get(JOBS, params={"job_type_key": "data_export"}).json()["count"]
        assert "not found" in assert_error(client.post(EXPORTS, json={"job_ids": [10**12]}), 400)["message"]
        assert_error(client.post(EXPORTS, json={"job_ids": []}), 422)
        assert_error(client.post(EXPORTS, json={"job_ids": [mine["id"], mine["id"]]}), 400)
        assert_error(client.post(EXPORTS, json={"job_ids": [mine["id"]], "format": "xml"}), 422)
        assert_error(client.post(EXPORTS, json={"job_ids": [2**70]}), 422)
        # A job that is not an export has no export file; its own results are elsewhere.
        assert "/results/" in assert_error(client.get(f"{JOBS}{mine['id']}/export/"), 404)["message"]
        assert client.get(JOBS, params={"job_type_key": "data_export"}).json()["count"] == before
        # The export pipeline is internal: it cannot be submitted directly over arbitrary ids.
        direct = client.post(
            JOBS,
            json={
                "name": "x",
                "pipeline": "data-export",
                "inputs": [{"name": "a", "kind": "text", "data": "1"}],
            },
        )
        assert_error(direct, 400)
        assert "data-export" not in {p["slug"] for p in client.get("/api/v2/pipelines/").json()}
    with shared_server.client(other.stdout.strip().splitlines()[-1]) as foreign:
        refused = foreign.post(EXPORTS, json={"job_ids": [mine["id"]]})
        assert f"Job {mine['id']} not found" in assert_error(refused, 400)["message"]


def test_cli_export_waits_and_writes_the_file(shared_server: Server, tmp_path: Any) -> None:
    with shared_server.client() as client:
        jobs = source_jobs(client)
        expected = own_results(client, jobs[0]["id"]) + own_results(client, jobs[1]["id"])
    target = tmp_path / "out" / "export.csv"
    done = run_cli(
        ["export", str(jobs[0]["id"]), str(jobs[1]["id"]), "--output", str(target)], shared_server.env
    )
    assert done.returncode == 0, done.stderr
    assert parse_csv(target.read_text()) == expected
    assert [p.name for p in target.parent.iterdir()] == ["export.csv"]
    as_jsonl = run_cli(["export", str(jobs[0]["id"]), "-F", "jsonl"], shared_server.env)
    assert as_jsonl.returncode == 0, as_jsonl.stderr
    assert [json.loads(line) for line in as_jsonl.stdout.splitlines()] == expected[:4]
