"""Bad input to the native API: each gets a clear JSON 4xx, and nothing is created."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server, text_inputs
from tests.helpers.api import JOBS, assert_error, b64, count_named, finished, submit, unique

CAPS = {
    "CONVEYOR_MAX_INPUTS_PER_JOB": "5",
    "CONVEYOR_MAX_INPUT_BYTES": "100",
    "CONVEYOR_MAX_JOB_BYTES": "300",
    "CONVEYOR_MAX_REQUEST_BYTES": "4000",
}
ONE_TEXT = [{"name": "a", "kind": "text", "data": "a"}]


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def _png() -> str:
    return b64(holdout_pngs(limit=1)[0][1])


def rejected(
    client: httpx.Client, status: int, body: dict[str, Any], *, start_now: bool = True
) -> dict[str, Any]:
    """POST ``body`` (its name made unique), expect ``status`` and check that no job was created."""
    name = unique("bad")
    response = client.post(JOBS + ("?start_now=true" if start_now else ""), json={"name": name, **body})
    error = assert_error(response, status)
    assert count_named(client, name) == 0, f"a job was created by a rejected request: {body}"
    return error


# (status, request body without its name)
CASES: dict[str, tuple[int, dict[str, Any]]] = {
    "unknown-pipeline-slug": (400, {"pipeline": "no-such-pipeline", "inputs": ONE_TEXT}),
    "unknown-pipeline-id": (400, {"pipeline_id": 987654, "inputs": ONE_TEXT}),
    "missing-pipeline": (400, {"inputs": ONE_TEXT}),
    "empty-pipeline": (400, {"pipeline": "", "inputs": ONE_TEXT}),
    "unknown-field": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "colour": "red"}),
    "unknown-input-field": (
        422,
        {"pipeline": "test-delay", "inputs": [{"name": "a", "kind": "text", "data": "a", "url": "x"}]},
    ),
    "unknown-input-kind": (422, {"pipeline": "test-delay", "inputs": [{"kind": "ftp", "data": "ftp://x"}]}),
    "input-without-data": (422, {"pipeline": "test-delay", "inputs": [{"name": "a", "kind": "text"}]}),
    "inputs-not-a-list": (422, {"pipeline": "test-delay", "inputs": "abc"}),
    "text-for-digits": (400, {"pipeline": "digits", "inputs": ONE_TEXT}),
    "invalid-base64": (
        400,
        {"pipeline": "test-delay", "inputs": [{"kind": "base64", "data": "not base64!"}]},
    ),
    "invalid-base64-padding": (
        400,
        {"pipeline": "test-delay", "inputs": [{"kind": "base64", "data": "abc"}]},
    ),
    "invalid-base64-data-uri": (
        400,
        {"pipeline": "digits", "inputs": [{"kind": "base64", "data": "data:image/png;base64,@@@"}]},
    ),
    "one-bad-among-good-base64": (
        400,
        {
            "pipeline": "test-delay",
            "inputs": [{"kind": "base64", "data": b64(b"fine")}, {"kind": "base64", "data": "%%%"}],
        },
    ),
    "negative-delay": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "delay": -1}),
    "negative-timeout": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "timeout": -5}),
    "zero-timeout": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "timeout": 0}),
    "max-failed-ratio-over-1": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "max_failed_ratio": 1.5}),
    "max-failed-ratio-negative": (
        422,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "max_failed_ratio": -0.1},
    ),
    "no-inputs-no-delay": (400, {"pipeline": "test-delay", "inputs": []}),
    "no-inputs-zero-delay": (400, {"pipeline": "test-delay", "delay": 0}),
    "explain-unsupported-test-delay": (400, {"pipeline": "test-delay", "inputs": ONE_TEXT, "explain": True}),
    "explain-unsupported-digits": (
        400,
        {"pipeline": "digits", "inputs": [{"kind": "base64", "data": "AAAA"}], "explain": True},
    ),
    "config-item-seconds-text": (
        400,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": {"item_seconds": "x"}},
    ),
    "config-item-seconds-negative": (
        400,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": {"item_seconds": -1}},
    ),
    "config-fail-rate-over-1": (
        400,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": {"fail_rate": 2}},
    ),
    "config-fail-names-not-list": (
        400,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": {"fail_names": "item-0"}},
    ),
    "config-batch-size-zero": (
        400,
        {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": {"batch_size": 0}},
    ),
    "config-not-an-object": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "config": "fast"}),
    "limit-zero": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "limit": 0}),
    "delay-not-a-number": (422, {"pipeline": "test-delay", "inputs": ONE_TEXT, "delay": "soon"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_submission_is_a_clear_error_and_creates_nothing(client: httpx.Client, case: str) -> None:
    status, body = CASES[case]
    for start_now in (True, False):
        rejected(client, status, body, start_now=start_now)


def test_unknown_pipeline_error_names_it(client: httpx.Client) -> None:
    error = rejected(client, 400, {"pipeline": "no-such-pipeline", "inputs": ONE_TEXT})
    assert error["error"] == "unknown_pipeline"
    assert "no-such-pipeline" in error["message"]


def test_wrong_input_kind_error_names_the_accepted_kinds(client: httpx.Client) -> None:
    error = rejected(client, 400, {"pipeline": "digits", "inputs": ONE_TEXT})
    assert "base64" in error["message"]


def test_unknown_project_is_refused(client: httpx.Client) -> None:
    name = unique("bad-project")
    response = client.post(
        JOBS, json={"name": name, "pipeline": "test-delay", "project_id": 987654, "inputs": ONE_TEXT}
    )
    assert response.status_code in (400, 404), response.text
    assert_error(response, response.status_code)
    assert count_named(client, name) == 0


@pytest.mark.parametrize("name", ["", "x" * 501])
def test_bad_name_is_422(client: httpx.Client, name: str) -> None:
    response = client.post(JOBS, json={"name": name, "pipeline": "test-delay", "inputs": ONE_TEXT})
    assert_error(response, 422)


def test_missing_name_is_422(client: httpx.Client) -> None:
    tag = unique("noname")
    response = client.post(
        JOBS, json={"pipeline": "test-delay", "inputs": [{"name": tag, "kind": "text", "data": "a"}]}
    )
    error = assert_error(response, 422)
    assert "name" in error["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"name": "x", "pipeline": "test-delay"', b'{"name": "x"} trailing', b"\xff\xfe\x00"],
    ids=["garbage", "truncated", "trailing", "not-utf8"],
)
def test_malformed_json_is_400(client: httpx.Client, raw: bytes) -> None:
    response = client.post(JOBS, content=raw, headers={"content-type": "application/json"})
    error = assert_error(response, 400)
    if raw.isascii():
        assert error["error"] == "malformed_json"


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a job"', b"null", b"42"])
def test_json_that_is_not_an_object_is_422(client: httpx.Client, raw: bytes) -> None:
    response = client.post(JOBS, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_is_refused(client: httpx.Client, content_type: str) -> None:
    name = unique("ctype")
    payload = json.dumps({"name": name, "pipeline": "test-delay", "inputs": ONE_TEXT}).encode()
    response = client.post(JOBS, content=payload, headers={"content-type": content_type})
    assert response.status_code in (415, 422), response.text
    assert_error(response, response.status_code)
    assert count_named(client, name) == 0


def test_bad_start_now_is_422(client: httpx.Client) -> None:
    name = unique("start-now")
    response = client.post(
        f"{JOBS}?start_now=maybe", json={"name": name, "pipeline": "test-delay", "inputs": ONE_TEXT}
    )
    assert_error(response, 422)
    assert count_named(client, name) == 0


def test_bad_log_and_item_filters_are_400(client: httpx.Client) -> None:
    job = submit(client, name=unique("filters"), n=2)
    finished(client, job["id"])
    url = f"{JOBS}{job['id']}/"
    for level in ("LOUD", "verbose", "5"):
        assert_error(client.get(url + "logs/", params={"level": level}), 400)
    for status in ("DONE", "SUCCESS,nope", "STARTED"):
        assert_error(client.get(url + "items/", params={"status": status}), 400)
    assert_error(client.get(url + "logs/", params={"after": -1}), 422)
    assert_error(client.get(url + "logs/", params={"limit": 0}), 422)
    assert_error(client.get(url + "items/", params={"limit": 0}), 422)
    assert_error(client.get(url + "items/", params={"after": "x"}), 422)
    assert_error(client.get(url + "results/", params={"format": "xlsx"}), 422)


def test_numbers_beyond_64_bits_are_4xx_not_a_driver_overflow(client: httpx.Client) -> None:
    """Found by schemathesis: these reached SQLite as integers it cannot hold (500)."""
    huge = 2**64 + 5
    job = submit(client, name=unique("huge-numbers"), n=1, start_now=False)
    for method, path, params in [
        ("GET", JOBS, {"offset": huge}),
        ("GET", JOBS, {"project": huge}),
        ("GET", JOBS, {"limit": huge}),
        ("POST", f"{JOBS}{huge}/retry/", None),
        ("GET", f"{JOBS}{huge}/", None),
        ("GET", f"{JOBS}{job['id']}/items/", {"after": huge}),
        ("GET", f"{JOBS}{job['id']}/logs/", {"after": huge}),
        ("GET", "/api/v2/collections/", {"offset": huge}),
        ("GET", "/api/jobs/history", {"page": huge}),
    ]:
        response = client.request(method, path, params=params)
        assert 400 <= response.status_code < 500, (method, path, params, response.status_code, response.text)
    # The largest id the database holds is still a plain "not found".
    assert_error(client.get(f"{JOBS}{2**63 - 1}/"), 404)
    # A key that would expire after the end of the calendar: a clear 4xx, not an overflow.
    made = client.post(
        "/api/v2/keys/", json={"name": "far-future", "expires_in_days": 1.7976931348623157e308}
    )
    assert made.status_code == 422, made.text
    assert "expires_in_days" in made.json()["message"]


# --------------------------------------------------------------------------- caps (dedicated server)
@pytest.fixture
def capped(server_factory: Callable[..., Server]) -> Iterator[httpx.Client]:
    server = server_factory(workers=0, extra_env=CAPS)
    with server.client() as c:
        yield c


def _text(n: int, size: int) -> list[dict[str, str]]:
    return [{"name": f"t{i}", "kind": "text", "data": "x" * size} for i in range(n)]


def test_input_caps_give_413_and_create_nothing(capped: httpx.Client) -> None:
    too_large: list[dict[str, Any]] = [
        {"pipeline": "test-delay", "inputs": text_inputs(6)},  # 6 > 5 inputs
        {"pipeline": "test-delay", "inputs": text_inputs(6), "limit": 2},
        {"pipeline": "test-delay", "inputs": _text(1, 101)},  # 101 > 100 bytes in one input
        {"pipeline": "test-delay", "inputs": [{"name": "u", "kind": "text", "data": "é" * 51}]},  # 102 bytes
        {"pipeline": "test-delay", "inputs": [{"name": "b", "kind": "base64", "data": b64(b"\x00" * 101)}]},
        {"pipeline": "test-delay", "inputs": [{"name": "b", "kind": "base64", "data": b64(b"\x00" * 5000)}]},
        {"pipeline": "test-delay", "inputs": _text(4, 80)},  # 320 > 300 bytes in the job
        {
            "pipeline": "test-delay",
            "inputs": [*_text(3, 99), {"name": "b", "kind": "base64", "data": b64(b"12345")}],
        },
    ]
    for body in too_large:
        for start_now in (True, False):
            error = rejected(capped, 413, body, start_now=start_now)
            assert error["error"] == "too_large"


def test_input_caps_are_inclusive(capped: httpx.Client) -> None:
    at_the_caps: list[dict[str, Any]] = [
        {"pipeline": "test-delay", "inputs": _text(5, 60)},  # 5 inputs, 300 bytes
        {"pipeline": "test-delay", "inputs": _text(3, 100)},  # 100 bytes per input, 300 per job
        {"pipeline": "test-delay", "inputs": [{"name": "b", "kind": "base64", "data": b64(b"\x01" * 100)}]},
    ]
    for body in at_the_caps:
        job = submit(capped, name=unique("at-cap"), start_now=False, **body)
        assert job["status"] == "CREATED"
        assert job["input_byte_amount"] == sum(
            len(i["data"]) if i["kind"] == "text" else 100 for i in body["inputs"]
        )


def test_request_body_cap_gives_413(capped: httpx.Client) -> None:
    name = unique("huge")
    response = capped.post(JOBS, json={"name": name, "pipeline": "test-delay", "inputs": _text(1, 5000)})
    assert_error(response, 413)
    assert count_named(capped, name) == 0


def test_real_png_over_the_input_cap_is_413(capped: httpx.Client) -> None:
    png = _png()
    error = rejected(
        capped, 413, {"pipeline": "digits", "inputs": [{"name": "p", "kind": "base64", "data": png}]}
    )
    assert "100" in error["message"]
