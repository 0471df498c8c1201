"""Schemathesis over the whole OpenAPI document: both dialects, authenticated, SQLite and PostgreSQL.

A real ``conveyor serve`` (no local workers: submitted jobs stay queued) answers every request,
authenticated with a real owner key. Each operation of ``/openapi.json`` (the native ``/api/v2/``
and the Modzy ``/api/`` dialect alike) gets the schema's examples, schemathesis' coverage cases
(boundary values, missing and wrong-typed fields) and random cases, valid and invalid, and every
response must:

- not be a 5xx (``not_a_server_error``);
- have a documented status code (``status_code_conformance``) and content type;
- match the documented schema of that status code (``response_schema_conformance``).

Only the two live event streams are left out (a stream never ends; tests/integration covers them).
The run is bounded: the coverage phase is a fixed set of cases per operation, and the fuzzing phase
draws ``CONVEYOR_TEST_FUZZ_EXAMPLES`` cases per operation (default 4, about a minute per backend;
set e.g. 200 for a long run). Random data differs from run to run; a failure prints a ``curl``
command that reproduces it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.pytest.lazy import get_all_tests

from tests.helpers import Server, start_server
from tests.helpers.api import JOBS, unique
from tests.helpers.backends import postgres_database

EXAMPLES = int(os.environ.get("CONVEYOR_TEST_FUZZ_EXAMPLES", "4"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_ENV = {
    # Inputs by reference fail fast and locally: no network, no AWS.
    "CONVEYOR_URL_TIMEOUT_SECONDS": "2",
    "CONVEYOR_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "CONVEYOR_S3_ACCESS_KEY_ID": "fuzz",
    "CONVEYOR_S3_SECRET_ACCESS_KEY": "fuzz",
    "CONVEYOR_S3_REGION": "us-east-1",
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        server = start_server(data_dir, workers=0, extra_env=FUZZ_ENV)
        yield server
        server.stop()
        return
    with postgres_database() as url:
        server = start_server(data_dir, workers=0, extra_env={**FUZZ_ENV, "CONVEYOR_DATABASE_URL": url})
        yield server
        server.stop()


def test_every_operation_answers_within_its_schema(fuzz_server: Server) -> None:
    document = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document).exclude(path_regex=r"events/$")
    schema.config.update(base_url=fuzz_server.url)
    headers = {"Authorization": f"Token {fuzz_server.key}"}
    own_prefix = fuzz_server.key.split(".", 1)[0]

    def check(case: Any) -> None:
        if case.path_parameters and case.path_parameters.get("prefix") == own_prefix:
            # Revoking the fuzzer's own key would turn every later case into a 401.
            case.path_parameters["prefix"] = "not" + own_prefix
        case.call_and_validate(base_url=fuzz_server.url, headers=headers, checks=CHECKS, timeout=30)

    # No shrinking: the first failing case (and its curl command) is enough, and shrinking is slow.
    check_settings = settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    failures: list[str] = []
    tested = 0
    for result in get_all_tests(schema=schema, test_func=check, settings=check_settings, given_kwargs=None):
        operation, test = result.ok()
        tested += 1
        try:
            test()
        except (Exception, FailureGroup) as exc:  # FailureGroup is a BaseExceptionGroup
            failures.append(f"{operation.label}: {exc}")
    assert tested >= 53, f"only {tested} operations in the OpenAPI document"
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)


def test_what_the_fuzzer_found_stays_fixed(fuzz_server: Server) -> None:
    """Regressions of the 500s schemathesis found (each now a clear 4xx on both backends)."""
    past_int32, past_int64 = 2**31, 2**63
    with fuzz_server.client() as client:
        # Projects, pipelines and collections have 32-bit ids on PostgreSQL: a bigger id overflowed
        # the driver's parameter cast (500) instead of being a 422 at the edge.
        for method, path, params, body in [
            ("GET", f"/api/v2/pipelines/{past_int32}/", None, None),
            ("GET", f"/api/v2/projects/{past_int32}/", None, None),
            ("GET", f"/api/v2/collections/{past_int32}/", None, None),
            ("DELETE", f"/api/v2/collections/{past_int32}/", None, None),
            ("GET", f"/api/v2/collections/{-past_int32 - 1}/items/", None, None),
            (
                "POST",
                f"/api/v2/collections/{past_int32}/items/",
                None,
                {"inputs": [{"kind": "s3", "data": ""}]},
            ),
            ("GET", "/api/v2/collections/", {"project": past_int32}, None),
            ("GET", "/api/v2/jobs/", {"project": -past_int32 - 1}, None),
            ("GET", "/api/v2/jobs/1/items/", {"after": past_int32}, None),
            ("GET", f"/api/v2/projects/{past_int32}/members/", None, None),
            # Item ids are 64-bit: these were unbounded in two routes.
            ("GET", f"/api/v2/collections/1/items/{past_int64}/", None, None),
            ("GET", f"/api/v2/jobs/1/items/{past_int64}/sample", None, None),
            ("GET", f"/api/v2/jobs/1/items/{past_int64}/explanation", None, None),
        ]:
            response = client.request(method, path, params=params, json=body)
            assert response.status_code == 422, (method, path, params, response.status_code, response.text)
            assert response.json()["error"] == "validation_error"
        for field in ("project_id", "pipeline_id", "collection_id", "source_image_single_id", "limit"):
            job = {"name": "too-big", "pipeline": "test-delay", "inputs": [{"kind": "text", "data": "a"}]}
            response = client.post("/api/v2/jobs/", json={**job, field: past_int32})
            assert response.status_code == 422, (field, response.text)
            assert field in response.json()["message"]
        response = client.post("/api/v2/collections/", json={"name": "too-big", "project_id": past_int32})
        assert response.status_code == 422, response.text
        # A validation error echoing a non-finite number (JSON has none) was itself a 500.
        response = client.post("/api/v2/jobs/upload/", files={"job": (None, "-Infinity")})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["input"] == "-inf"
        # The largest ids the columns hold are a plain 404.
        assert client.get(f"/api/v2/collections/{past_int32 - 1}/").status_code == 404
        assert client.get(f"/api/v2/pipelines/{past_int32 - 1}/").status_code == 404


def test_nul_characters_are_a_4xx_not_a_driver_error(fuzz_server: Server) -> None:
    """PostgreSQL text cannot hold NUL: a name, filter or key with one was a 500 (the COPY of items
    even left the connection broken). Now a 400 there, nothing written; SQLite stores them."""
    postgres = "CONVEYOR_DATABASE_URL" in fuzz_server.env
    tag = unique("nul")
    text = [{"kind": "text", "data": "x"}]
    job = {"name": tag, "pipeline": "test-delay", "inputs": text}
    sources = {"type": "text", "sources": {"s\x00": {"i": "x"}}}
    modzy = {"model": {"identifier": "test-delay", "version": "1"}, "name": f"{tag}\x00", "input": sources}
    with fuzz_server.client() as client:
        for method, path, params, body in [
            ("POST", JOBS, None, {**job, "name": f"{tag}\x00"}),
            ("POST", JOBS, None, {**job, "inputs": [{**text[0], "name": "a\x00"}]}),
            ("POST", JOBS, None, {**job, "config": {"k\x00": 1}}),
            ("GET", JOBS, {"search": "a\x00"}, None),
            ("GET", JOBS, {"submitted_by": "a\x00"}, None),
            ("GET", "/api/jobs/history", {"user": "a\x00", "model": "m\x00"}, None),
            ("GET", "/api/jobs/a%00b", None, None),
            ("POST", "/api/v2/collections/", None, {"name": "c\x00"}),
            ("POST", "/api/v2/keys/", None, {"name": "k\x00"}),
            ("DELETE", "/api/v2/keys/a%00b/", None, None),
            (
                "POST",
                "/api/jobs",
                None,
                {**modzy, "input": {"type": "text", "sources": {"s\x00": {"i": "x"}}}},
            ),
        ]:
            response = client.request(method, path, params=params, json=body)
            assert response.status_code < 500, (method, path, response.text)
            if postgres:
                assert response.status_code in (400, 404), (method, path, response.text)
        if postgres:  # the rejected submissions left nothing, and the server still works
            assert client.get(JOBS, params={"search": tag}).json()["count"] == 0
            assert client.post(JOBS, json=job).status_code == 201
