"""``conveyor submit`` by reference, run as a user would (a subprocess): an S3 prefix listed by the
collect stage, positional URLs, ``--manifest`` (a local file sent inline, or an address), and
``--fetch at_submit``. The workers of this branch do not read references yet, so the jobs use
``test-delay`` (it takes any bytes) and the tests check what submit and the collect stage did."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TERMINAL_STATUSES as TERMINAL
from tests.helpers import Server, run_cli, wait_status
from tests.helpers.api import unique
from tests.helpers.inputs import FileServer, serve_files, serve_references
from tests.moto_s3 import CREDENTIALS, moto_s3_server

boto3 = pytest.importorskip("boto3")

BUCKET = "cli-photos"
OBJECTS = 230  # more than two listing pages (CONVEYOR_CHUNK_SIZE=100)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def photos(s3_endpoint: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    s3.create_bucket(Bucket=BUCKET)
    keys = [f"2026/p-{i:04d}.jpg" for i in range(OBJECTS)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * (i % 7 + 1))
    s3.put_object(Bucket=BUCKET, Key="elsewhere/other.jpg", Body=b"not listed")
    return keys


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    yield from serve_references(tmp_path_factory, s3_endpoint)


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    yield from serve_files()


def cli(server: Server, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = run_cli(list(args), server.env)
    if ok:
        assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def submitted(server: Server, *args: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(cli(server, "submit", *args, "--no-wait", "--json").stdout)
    return job


def api(server: Server, path: str) -> Any:
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def finished(server: Server, job_id: int) -> dict[str, Any]:
    with server.client() as client:
        return wait_status(client, job_id, TERMINAL, timeout=90)


def items_of(server: Server, job_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = -1
    for _ in range(100):
        page = api(server, f"/api/v2/jobs/{job_id}/items/?limit=1000&after={after}")
        rows.extend(page["results"])
        if not page["next"] or not page["results"]:
            return rows
        after = page["results"][-1]["seq"]
    raise AssertionError("too many item pages")


def collect_params(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    stage = next(s for s in job["progress"]["stages"] if s["key"] == "collect")
    return stage["status"], {p["name"]: p["value"] for p in stage["params"]}


# --------------------------------------------------------------------------- S3 prefix
def test_submit_an_s3_prefix_lists_it_in_the_collect_stage(server: Server, photos: list[str]) -> None:
    name = unique("cli-prefix")
    done = cli(server, "submit", "test-delay", f"s3://{BUCKET}/2026/", "--name", name, "--wait")
    assert "SUCCESS" in done.stdout
    assert f"collect SUCCESS: {OBJECTS} entries listed from 1 source(s)" in done.stdout
    assert f"{OBJECTS} total, {OBJECTS} completed" in done.stdout
    job_id = int(re.search(r"Job (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    job = api(server, f"/api/v2/jobs/{job_id}/")
    assert (job["name"], job["status"], job["total"], job["pending"]) == (name, "SUCCESS", OBJECTS, 0)
    status, params = collect_params(job)
    assert status == "SUCCESS"
    assert params == {
        "sources": 1,
        "entries_listed": OBJECTS,
        "bytes_declared": sum(i % 7 + 1 for i in range(OBJECTS)),
    }
    rows = items_of(server, job_id)
    assert [r["name"] for r in rows] == [key.rsplit("/", 1)[-1] for key in photos]
    assert [r["source"] for r in rows] == [f"s3://{BUCKET}/{key}" for key in photos]
    assert [r["seq"] for r in rows] == list(range(OBJECTS))
    # `show` prints the collect stage with its params.
    shown = cli(server, "show", str(job_id)).stdout
    assert re.search(r"Collect\s+SUCCESS\s+100%\s+sources=1, entries_listed=230", shown), shown


def test_submit_without_waiting_says_the_collect_stage_lists_the_rest(
    server: Server, photos: list[str]
) -> None:
    done = cli(server, "submit", "test-delay", f"s3://{BUCKET}/2026/", "--no-wait", "--no-start")
    assert "0 items so far; the collect stage lists the rest" in done.stderr
    job_id = int(re.search(r"Submitted job (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    job = api(server, f"/api/v2/jobs/{job_id}/")
    assert (job["status"], job["total"]) == ("CREATED", 0)
    assert job["name"] == f"test-delay: s3://{BUCKET}/2026/"  # named after the prefix
    assert collect_params(job) == ("CREATED", {"sources": 1, "entries_listed": 0, "bytes_declared": 0})
    assert cli(server, "delete", str(job_id)).returncode == 0


# --------------------------------------------------------------------------- URLs
def test_positional_urls_and_s3_objects_become_reference_items(
    server: Server, files: FileServer, photos: list[str]
) -> None:
    first = files.add("/cli/a.jpg", b"a" * 10)
    second = files.add("/cli/b.jpg", b"b" * 20)
    job = submitted(server, "test-delay", first, f"s3://{BUCKET}/{photos[3]}", second, "some text")
    assert job["total"] == 4
    final = finished(server, job["id"])
    assert final["status"] == "SUCCESS"
    assert not any(s["key"] == "collect" for s in final["progress"]["stages"])  # nothing to list
    rows = items_of(server, job["id"])
    assert [(r["name"], r["kind"], r["source"]) for r in rows] == [
        ("a.jpg", "base64", first),
        ("p-0003.jpg", "base64", f"s3://{BUCKET}/{photos[3]}"),
        ("b.jpg", "base64", second),
        ("input-3", "text", None),
    ]


# --------------------------------------------------------------------------- manifests
def test_a_local_jsonl_manifest_is_sent_inline(server: Server, files: FileServer, tmp_path: Path) -> None:
    urls = [files.add(f"/m/photo-{i}.jpg", bytes([i]) * 5) for i in range(6)]
    lines = [json.dumps({"uri": url, "name": f"photo {i}"}) for i, url in enumerate(urls)]
    lines.insert(3, "{not json")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    job = submitted(server, "test-delay", "--manifest", str(manifest), "--name", unique("cli-jsonl"))
    assert job["total"] == 7  # parsed at submit: every line is an item at once
    final = finished(server, job["id"])
    assert not any(s["key"] == "collect" for s in final["progress"]["stages"])
    rows = items_of(server, job["id"])
    assert [r["name"] for r in rows] == [
        "photo 0",
        "photo 1",
        "photo 2",
        "line-4",
        "photo 3",
        "photo 4",
        "photo 5",
    ]
    assert [r["source"] for r in rows if r["status"] == "SUCCESS"] == urls
    bad = rows[3]
    assert bad["status"] == "FAILURE" and "invalid_input" in (bad["error"] or "")
    assert (final["completed"], final["failed"]) == (6, 1)


def test_csv_and_text_manifests_take_their_format_from_the_file_name(
    server: Server, files: FileServer, tmp_path: Path
) -> None:
    urls = [files.add(f"/c/{i}.png", b"png") for i in range(3)]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["name", "uri"])
    writer.writerows([f"row-{i}", url] for i, url in enumerate(urls))
    as_csv = tmp_path / "inputs.csv"
    as_csv.write_text(table.getvalue())
    as_text = tmp_path / "inputs.txt"
    as_text.write_text("# one URI a line\n" + "\n".join(urls) + "\n")
    job = submitted(server, "test-delay", "--manifest", str(as_csv), "--manifest", str(as_text))
    assert job["total"] == 6
    rows = items_of(server, job["id"])
    assert [(r["name"], r["source"]) for r in rows] == [
        *((f"row-{i}", url) for i, url in enumerate(urls)),
        *((f"{i}.png", url) for i, url in enumerate(urls)),
    ]
    # --format overrides the suffix: the CSV read as plain text is its lines, header included.
    forced = submitted(server, "test-delay", "--manifest", str(as_csv), "--format", "text")
    assert forced["total"] == 4
    assert finished(server, forced["id"])["failed"] == 4  # "name,uri" and "row-0,http://..." are not URIs


def test_a_manifest_address_is_listed_by_the_collect_stage(server: Server, files: FileServer) -> None:
    urls = [files.add(f"/listed/{i}.jpg", b"z") for i in range(150)]
    address = files.add("/lists/photos.txt", "\n".join(urls).encode())
    done = cli(server, "submit", "test-delay", "--manifest", address, "--wait")
    assert "collect SUCCESS: 150 entries listed from 1 source(s)" in done.stdout
    job_id = int(re.search(r"Job (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    job = api(server, f"/api/v2/jobs/{job_id}/")
    assert job["total"] == 150 and job["completed"] == 150
    assert [r["source"] for r in items_of(server, job_id)] == urls


def test_bad_manifest_arguments_are_usage_errors(server: Server, tmp_path: Path) -> None:
    missing = cli(server, "submit", "test-delay", "--manifest", str(tmp_path / "nope.jsonl"), ok=False)
    assert missing.returncode == 2
    assert "neither a file nor an http(s):// or s3:// address" in missing.stderr
    alone = cli(server, "submit", "test-delay", "x", "--format", "csv", ok=False)
    assert alone.returncode == 2 and "--manifest" in alone.stderr
    binary = tmp_path / "bytes.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    assert cli(server, "submit", "test-delay", "--manifest", str(binary), ok=False).returncode == 2


# --------------------------------------------------------------------------- fetch at submit
def test_fetch_at_submit_reads_the_urls_during_the_request(server: Server, files: FileServer) -> None:
    present = files.add("/strict/here.bin", b"0123456789")
    missing = f"{files.base}/strict/missing.bin"
    refused = cli(server, "submit", "test-delay", present, missing, "--fetch", "at_submit", ok=False)
    assert refused.returncode == 1
    assert "input_unavailable" in refused.stderr and "missing.bin" in refused.stderr
    # The same inputs by reference: accepted at once (nothing read); the workers then read the
    # present one (its size known from then on) and fail the missing one alone.
    by_reference = submitted(server, "test-delay", present, missing, "--max-failed-ratio", "1")
    assert by_reference["total"] == 2
    finished(server, by_reference["id"])
    rows = items_of(server, by_reference["id"])
    assert [(r["status"], r["byte_size"]) for r in rows] == [("SUCCESS", 10), ("FAILURE", 0)]
    assert rows[1]["error"].startswith("input_unavailable:")
    strict = submitted(server, "test-delay", present, "--fetch", "at_submit")
    assert finished(server, strict["id"])["status"] == "SUCCESS"
    rows = items_of(server, strict["id"])
    assert [(r["source"], r["byte_size"], r["result"]) for r in rows] == [(present, 10, {"bytes": 10})]
