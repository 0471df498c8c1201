"""The ``conveyor`` job commands against a real server, run as a user would: in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import CONVEYOR, Server, free_port, run_cli, wait_status
from tests.helpers import TERMINAL_STATUSES as TERMINAL


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli(server: Server, *args: str, ok: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = run_cli(list(args), server.env, **kw)
    if ok:
        assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def submit_json(server: Server, *args: str) -> dict[str, Any]:
    """Submit without waiting and return the job the server answered with."""
    job: dict[str, Any] = json.loads(cli(server, "submit", *args, "--no-wait", "--json").stdout)
    return job


def api(server: Server, path: str) -> Any:
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def items_of(server: Server, job_id: int) -> list[dict[str, Any]]:
    page = api(server, f"/api/v2/jobs/{job_id}/items/?limit=1000")
    rows: list[dict[str, Any]] = page["results"]
    return rows


def finished(server: Server, job_id: int, timeout: float = 60) -> dict[str, Any]:
    with server.client() as client:
        return wait_status(client, job_id, TERMINAL, timeout=timeout)


# --------------------------------------------------------------------------- submit
def test_submit_texts_with_wait_shows_the_outcome(shared_server: Server) -> None:
    name = unique("texts")
    done = cli(
        shared_server,
        "submit",
        "test-delay",
        "alpha",
        "beta",
        "gamma",
        "--name",
        name,
        "--wait",
        "-c",
        "item_seconds=0.05",
    )
    assert "SUCCESS" in done.stdout
    assert "3 total, 3 completed, 0 failed, 0 canceled" in done.stdout
    job_id = int(re.search(r"Job (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    job = api(shared_server, f"/api/v2/jobs/{job_id}/")
    assert (job["name"], job["status"], job["total"], job["completed"]) == (name, "SUCCESS", 3, 3)
    assert job["config"] == {"item_seconds": 0.05}  # "0.05" was parsed as JSON, so a number
    rows = items_of(shared_server, job_id)
    assert [(r["kind"], r["byte_size"]) for r in rows] == [("text", 5), ("text", 4), ("text", 5)]


def test_submit_files_texts_and_stdin_lines(shared_server: Server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3
    note = tmp_path / "note.bin"
    note.write_bytes(payload)
    done = cli(
        shared_server,
        "submit",
        "test-delay",
        str(note),
        "plain words",
        "-",
        "--no-wait",
        "--json",
        input="first line\n\nsecond line\n",
    )
    job = json.loads(done.stdout)
    assert job["total"] == 4
    final = finished(shared_server, job["id"])
    assert final["status"] == "SUCCESS"
    rows = items_of(shared_server, job["id"])
    assert [(r["name"], r["kind"], r["byte_size"]) for r in rows] == [
        ("note.bin", "base64", len(payload)),
        ("input-1", "text", len("plain words")),
        ("input-2", "text", len("first line")),
        ("input-3", "text", len("second line")),
    ]
    assert rows[0]["result"] == {"bytes": len(payload)}


def test_submit_without_start_then_run(shared_server: Server) -> None:
    job = submit_json(shared_server, "test-delay", "one", "two", "--no-start", "--name", unique("later"))
    assert job["status"] == "CREATED"
    done = cli(shared_server, "run", str(job["id"]), "--wait")
    assert "SUCCESS" in done.stdout
    assert api(shared_server, f"/api/v2/jobs/{job['id']}/")["completed"] == 2


def test_a_job_that_fails_makes_submit_wait_exit_non_zero(shared_server: Server) -> None:
    done = cli(
        shared_server,
        "submit",
        "test-delay",
        "a",
        "b",
        "c",
        "--max-failed-ratio",
        "0",
        "--config-json",
        '{"fail_names": ["input-1"]}',
        ok=False,
    )
    assert done.returncode == 3, done.stderr
    assert "FAILURE" in done.stdout
    assert "input-1: injected failure for item 'input-1'" in done.stdout  # failed items are listed


# --------------------------------------------------------------------------- history and detail
def test_jobs_table_filters_and_json(shared_server: Server) -> None:
    tag = unique("hist")
    good = submit_json(shared_server, "test-delay", "x", "--name", f"{tag}-good")
    bad = submit_json(
        shared_server,
        "test-delay",
        "x",
        "y",
        "--name",
        f"{tag}-bad",
        "--max-failed-ratio",
        "0",
        "-c",
        'fail_names=["input-0"]',
    )
    assert finished(shared_server, good["id"])["status"] == "SUCCESS"
    assert finished(shared_server, bad["id"])["status"] == "FAILURE"

    page = json.loads(cli(shared_server, "jobs", "--search", tag, "--json").stdout)
    assert page["count"] == 2
    assert [j["id"] for j in page["results"]] == [bad["id"], good["id"]]  # newest first

    failed = json.loads(cli(shared_server, "jobs", "--search", tag, "--status", "FAILURE", "--json").stdout)
    assert [j["id"] for j in failed["results"]] == [bad["id"]]
    by_name = json.loads(cli(shared_server, "jobs", "--search", tag, "--ordering", "name", "--json").stdout)
    assert [j["name"] for j in by_name["results"]] == [f"{tag}-bad", f"{tag}-good"]
    none = json.loads(
        cli(shared_server, "jobs", "--search", tag, "--created-after", "2999-01-01", "--json").stdout
    )
    assert none["count"] == 0 and none["results"] == []
    piped = json.loads(cli(shared_server, "jobs", "--search", tag, "--pipeline", "digits", "--json").stdout)
    assert piped["count"] == 0

    first = cli(shared_server, "jobs", "--search", tag, "--limit", "1")
    assert re.search(rf"^\s*{bad['id']}\s", first.stdout, re.M)
    assert "FAILURE" in first.stdout and "1 of 2 job(s)" in first.stdout
    cursor = re.search(r"--cursor (\S+)", first.stdout).group(1)  # type: ignore[union-attr]
    second = json.loads(
        cli(shared_server, "jobs", "--search", tag, "--limit", "1", "--cursor", cursor, "--json").stdout
    )
    assert [j["id"] for j in second["results"]] == [good["id"]]


def test_show_and_logs(shared_server: Server) -> None:
    job = submit_json(shared_server, "test-delay", "a", "b", "--name", unique("show"))
    finished(shared_server, job["id"])
    shown = json.loads(cli(shared_server, "show", str(job["id"]), "--json").stdout)
    assert shown["id"] == job["id"] and shown["status"] == "SUCCESS"
    assert [s["key"] for s in shown["progress"]["stages"]] == ["process", "results"]
    text = cli(shared_server, "show", str(job["id"])).stdout
    assert "SUCCESS" in text and "stages" in text and job["job_identifier"] in text

    logs = cli(shared_server, "logs", str(job["id"])).stdout
    assert f"Changing status of job {job['id']} to STARTED" in logs
    assert logs.index("to PENDING") < logs.index("to STARTED") < logs.index("to SUCCESS")
    warnings = cli(shared_server, "logs", str(job["id"]), "--level", "WARNING").stdout
    assert warnings.strip() == ""


def test_logs_follow_tails_a_running_job_until_it_ends(shared_server: Server) -> None:
    job = submit_json(shared_server, "test-delay", "a", "b", "c", "-c", "item_seconds=0.4")
    followed = cli(shared_server, "logs", str(job["id"]), "--follow", timeout=60)
    assert f"Finished job #{job['id']} (SUCCESS)" in followed.stdout
    assert api(shared_server, f"/api/v2/jobs/{job['id']}/")["status"] == "SUCCESS"


# --------------------------------------------------------------------------- actions
def test_cancel_a_slow_job_ends_revoked(shared_server: Server) -> None:
    job = submit_json(shared_server, "test-delay", *[f"t{i}" for i in range(10)], "-c", "item_seconds=1")
    with shared_server.client() as client:
        wait_status(client, job["id"], {"STARTED"}, timeout=30)
    done = cli(shared_server, "cancel", str(job["id"]), "--wait")
    assert "REVOKED" in done.stdout
    final = api(shared_server, f"/api/v2/jobs/{job['id']}/")
    assert final["status"] == "REVOKED"
    assert final["canceled"] >= 5
    assert final["completed"] + final["failed"] + final["canceled"] == final["total"] == 10


def test_retry_reruns_only_the_failed_items(shared_server: Server) -> None:
    job = submit_json(
        shared_server, "test-delay", *[f"r{i}" for i in range(6)], "-c", 'fail_names=["input-1", "input-4"]'
    )
    first = finished(shared_server, job["id"])
    assert (first["status"], first["completed"], first["failed"]) == ("SUCCESS", 4, 2)

    done = cli(shared_server, "retry", str(job["id"]), "--wait")
    assert "SUCCESS" in done.stdout
    rows = {r["name"]: r for r in items_of(shared_server, job["id"])}
    attempts = {name: row["attempts"] for name, row in rows.items()}
    assert attempts == {f"input-{i}": 2 if i in (1, 4) else 1 for i in range(6)}
    assert rows["input-1"]["status"] == "FAILURE"  # the injected failure is deterministic
    logs = cli(shared_server, "logs", str(job["id"])).stdout
    assert "retrying 2 failed items" in logs


def test_delete_then_show_is_not_found(shared_server: Server) -> None:
    job = submit_json(shared_server, "test-delay", "gone")
    finished(shared_server, job["id"])
    assert f"Deleted job {job['id']}" in cli(shared_server, "delete", str(job["id"])).stdout
    missing = cli(shared_server, "show", str(job["id"]), ok=False)
    assert missing.returncode == 1
    assert f"Job {job['id']} not found." in missing.stderr


# --------------------------------------------------------------------------- results
def by_name(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {r["name"]: (r["seq"], r["status"], r["result"], r["error"]) for r in rows}


def test_results_in_every_format_match_the_items(shared_server: Server, tmp_path: Path) -> None:
    job = submit_json(shared_server, "test-delay", "a", "bb", "ccc", "dddd", "-c", 'fail_names=["input-2"]')
    finished(shared_server, job["id"])
    expected = by_name(items_of(shared_server, job["id"]))
    assert expected["input-1"][2] == {"bytes": 2} and expected["input-2"][1] == "FAILURE"
    assert len(expected) == 4

    as_json = json.loads(cli(shared_server, "results", str(job["id"])).stdout)
    assert by_name(as_json) == expected

    lines = cli(shared_server, "results", str(job["id"]), "--format", "jsonl").stdout.splitlines()
    assert by_name([json.loads(line) for line in lines]) == expected

    exported = cli(shared_server, "results", str(job["id"]), "-F", "csv").stdout
    rows = [
        {
            **r,
            "seq": int(r["seq"]),
            "result": json.loads(r["result"]) if r["result"] else None,
            "error": r["error"] or None,
        }
        for r in csv.DictReader(io.StringIO(exported))
    ]
    assert by_name(rows) == expected

    target = tmp_path / "out" / "results.jsonl"
    cli(shared_server, "results", str(job["id"]), "-F", "jsonl", "--output", str(target))
    assert target.read_text().splitlines() == lines
    assert [p.name for p in target.parent.iterdir()] == ["results.jsonl"]  # no temporary file left


# --------------------------------------------------------------------------- catalog and errors
def test_pipelines(shared_server: Server) -> None:
    listed = json.loads(cli(shared_server, "pipelines", "--json").stdout)
    assert {"digits", "test-delay"} <= {p["slug"] for p in listed}
    table = cli(shared_server, "pipelines").stdout
    assert "digits" in table and "test-delay" in table


def test_unknown_pipeline_exits_1_with_the_server_message(shared_server: Server) -> None:
    done = cli(shared_server, "submit", "no-such-pipeline", "x", ok=False)
    assert done.returncode == 1
    assert "Unknown pipeline 'no-such-pipeline'; installed:" in done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_or_missing_key_and_unreachable_server_exit_1(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": "Token nope.wrong"}) as client:
        message = client.get("/api/v2/jobs/").json()["message"]
    wrong = run_cli(["jobs", "--key", "nope.wrong"], shared_server.env)
    assert wrong.returncode == 1
    assert message in wrong.stderr and "401" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    env = {k: v for k, v in shared_server.env.items() if k != "CONVEYOR_KEY"}
    missing = run_cli(["jobs"], env)
    assert missing.returncode == 1 and "no API key" in missing.stderr

    down = run_cli(["jobs", "--url", f"http://127.0.0.1:{free_port()}"], shared_server.env)
    assert down.returncode == 1 and "Cannot reach Conveyor" in down.stderr
    assert "Traceback" not in down.stderr


# --------------------------------------------------------------------------- demo
def test_demo_classifies_held_out_digits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_KEY")}
    env["CONVEYOR_DATA_DIR"] = str(tmp_path / "demo-data")
    done = subprocess.run(
        [*CONVEYOR, "demo", "--count", "120"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    accuracy = re.search(r"Accuracy: ([\d.]+)% \((\d+) of (\d+) correct", done.stdout)
    assert accuracy is not None, done.stdout
    assert float(accuracy.group(1)) >= 90 and accuracy.group(3) == "120"
    assert "120 total, 120 completed" in done.stdout
    assert "Server stopped cleanly" in done.stderr
    assert (tmp_path / "demo-data" / "conveyor.db").exists()


# --------------------------------------------------------------------------- the client under the CLI
def test_python_client_pages_streams_and_raises(shared_server: Server) -> None:
    from conveyor.client import ConveyorAPIError, ConveyorClient, text_input

    tag = unique("client")
    with ConveyorClient(shared_server.url, shared_server.key) as client:
        submitted = [
            client.submit("test-delay", [text_input(f"t{i}", name=f"n{i}")], name=f"{tag}-{i}")
            for i in range(5)
        ]
        seen: list[str] = []
        final = client.wait(submitted[-1]["id"], on_update=lambda j: seen.append(j["status"]), timeout=60)
        assert final["status"] == "SUCCESS" and seen[-1] == "SUCCESS"
        for job in submitted:
            client.wait(job["id"], timeout=60)

        paged = [j["id"] for j in client.iter_jobs(search=tag, ordering="id", page_size=2)]
        assert paged == [j["id"] for j in submitted]  # three pages, by cursor, nothing skipped or repeated
        assert [r["name"] for r in client.iter_results(submitted[0]["id"])] == ["n0"]
        assert [i["name"] for i in client.iter_items(submitted[1]["id"])] == ["n1"]

        try:
            client.get_job(10**9)
        except ConveyorAPIError as exc:
            assert (exc.status, exc.code, exc.message) == (404, "not_found", f"Job {10**9} not found.")
        else:
            raise AssertionError("a missing job must raise")
        try:
            list(client.iter_results(10**9))
        except ConveyorAPIError as exc:
            assert exc.status == 404
        else:
            raise AssertionError("a missing job's results must raise")
