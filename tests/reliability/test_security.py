"""Security: API key secrets never logged nor returned after creation, timing-safe key checks,
security headers on every response, CORS only where configured."""

from __future__ import annotations

import hmac
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.services.bootstrap import prepare
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store import auth as auth_module
from tests.helpers import Server
from tests.helpers.api import JOBS, submit, unique

DASHBOARD = "https://dash.example"


def test_key_secrets_are_never_logged_nor_returned(server_factory: Callable[..., Server]) -> None:
    """JSON logs at debug level (the text format is checked with CORS below)."""
    server = server_factory(
        workers=1,
        extra_env={
            "CONVEYOR_LOG_FORMAT": "json",
            "CONVEYOR_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # unreachable: the aws-s3 submission fails
            "CONVEYOR_URL_TIMEOUT_SECONDS": "2",
        },
        extra_args=["--log-level", "debug"],  # everything that could be logged is
    )
    with server.client() as owner:
        made = owner.post("/api/v2/keys/", json={"name": unique("leak"), "role": "member"})
        assert made.status_code == 201, made.text
        token = made.json()["key"]
        prefix, secret = token.split(".", 1)
        aws_secret = "AWS" + secret[::-1]
        bodies: list[str] = []  # every answer after the creation, which shows the key once
        with server.client(token) as member:
            job = submit(member, name=unique("leak-job"), n=2)
            bodies.append(member.get(f"{JOBS}{job['id']}/").text)
            # The same key as a cookie and as ?key= (event streams), and a wrong secret.
            with httpx.stream(
                "GET", f"{server.url}/api/v2/events/", params={"key": token}, timeout=10
            ) as stream:
                assert stream.status_code == 200
            with httpx.stream(
                "GET", f"{server.url}{JOBS}{job['id']}/events/", cookies={"conveyor_key": token}, timeout=10
            ) as stream:
                assert stream.status_code == 200
            wrong = httpx.get(f"{server.url}{JOBS}", headers={"Authorization": f"Token {prefix}.{'x' * 40}"})
            assert wrong.status_code == 401 and secret not in wrong.text
            # A Modzy aws-s3 submission's secretAccessKey (used once, never stored or logged).
            s3 = member.post(
                "/api/jobs",
                json={
                    "model": {"identifier": "test-delay", "version": "1"},
                    "input": {
                        "type": "aws-s3",
                        "accessKeyID": "AKIAFUZZ",
                        "secretAccessKey": aws_secret,
                        "region": "us-east-1",
                        "sources": {"a": {"i": {"bucket": "b", "key": "k"}}},
                    },
                },
            )
            assert s3.status_code == 400, s3.text
            bodies.append(s3.text)
        # Everything an owner can read afterwards.
        for path in [
            "/api/v2/keys/",
            "/api/v2/audit/",
            JOBS,
            f"{JOBS}{job['id']}/",
            f"{JOBS}{job['id']}/logs/",
            f"{JOBS}{job['id']}/transitions/",
            "/api/jobs/history",
            f"/api/jobs/{job['job_identifier']}",
            "/api/v2/projects/",
            "/metrics",
        ]:
            response = owner.get(path)
            assert response.status_code == 200, (path, response.text)
            bodies.append(response.text)
        assert prefix in "".join(bodies)  # the public part is shown, as it should be
    for body in bodies:
        assert secret not in body and aws_secret not in body
    assert server.stop() == 0
    log = server.log()
    assert "/api/v2/events/?key=[redacted]" in log  # the access line is there, without the key
    assert "/api/v2/keys/" in log
    assert secret not in log, "an API key secret was logged"
    assert aws_secret not in log, "an S3 secret was logged"


def test_key_check_compares_in_constant_time_known_prefix_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong secret under a real prefix and any secret under an unknown prefix go through the same
    path: one ``hmac.compare_digest`` of two SHA-256 hex digests, then the same 401."""
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", recording)
    with tempfile.TemporaryDirectory() as data_dir:
        store = Store(Settings(data_dir=Path(data_dir)), pool_size=1)
        try:
            prepare(store)
            account_id, _ = store.auth.ensure_defaults()
            key = store.auth.create_key(account_id=account_id, name="t", role="owner", project_id=None)
            outcomes = []
            for token in [f"{key.prefix}.{'y' * 40}", f"{'Z' * 12}.{'y' * 40}", f"{'Z' * 12}.{key.secret}"]:
                with pytest.raises(auth_module.Unauthenticated) as raised:
                    store.auth.authenticate(token)
                outcomes.append(raised.value.message)
            assert store.auth.authenticate(key.token).key_prefix == key.prefix
        finally:
            store.close()
    assert outcomes == ["Invalid API key."] * 3  # the answer does not tell which part was wrong
    assert len(compared) == 4
    assert all(len(a) == len(b) == 64 for a, b in compared)


def _assert_security_headers(response: httpx.Response, where: str) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("referrer-policy") == "no-referrer", where


def test_security_headers_on_every_kind_of_response(shared_server: Server) -> None:
    with shared_server.client() as client:
        job = submit(client, name=unique("headers"), n=1)
        for method, path, status in [
            ("GET", "/", 200),
            ("GET", "/login", 200),
            ("GET", f"/jobs/{job['id']}", 200),
            ("GET", "/static/app.js", 200),
            ("GET", "/livez", 200),
            ("GET", "/metrics", 200),
            ("GET", "/openapi.json", 200),
            ("GET", JOBS, 200),
            ("GET", f"{JOBS}{job['id']}/results/?format=csv", 200),
            ("GET", f"{JOBS}987654321/", 404),
            ("GET", f"{JOBS}?limit=0", 422),
            ("POST", JOBS, 422),
            ("GET", "/api/jobs/history", 200),
            ("GET", "/api/jobs/not-a-job", 404),
            ("GET", "/no/such/page", 404),
        ]:
            response = client.request(method, path)
            assert response.status_code == status, (path, response.text)
            _assert_security_headers(response, path)
            csp = response.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp, path
            if response.headers.get("content-type", "").startswith("text/html"):
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            else:
                assert csp.startswith("default-src 'none'"), path
        anonymous = httpx.get(f"{shared_server.url}{JOBS}")
        assert anonymous.status_code == 401
        _assert_security_headers(anonymous, "401")
        docs = httpx.get(f"{shared_server.url}/docs")
        _assert_security_headers(docs, "/docs")
        assert "content-security-policy" not in docs.headers  # Swagger UI's CDN scripts keep working
        with client.stream("GET", f"{JOBS}{job['id']}/events/") as stream:
            assert stream.status_code == 200
            _assert_security_headers(stream, "event stream")
        # No CORS unless configured: a foreign page gets no permission to read answers.
        preflight = client.options(
            JOBS, headers={"Origin": DASHBOARD, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        cross = client.get(JOBS, headers={"Origin": DASHBOARD})
        assert "access-control-allow-origin" not in cross.headers


def test_cors_allows_only_the_configured_origins(server_factory: Callable[..., Server]) -> None:
    server = server_factory(
        workers=0,
        extra_env={
            "CONVEYOR_CORS_ORIGINS": f"{DASHBOARD}/, https://b.example",
            "CONVEYOR_LOG_FORMAT": "text",
        },
        extra_args=["--log-level", "info"],
    )
    with server.client() as client:
        preflight = client.options(
            JOBS,
            headers={
                "Origin": DASHBOARD,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == DASHBOARD
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers
        _assert_security_headers(preflight, "preflight")
        answer = client.get(JOBS, headers={"Origin": "https://b.example"})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://b.example"
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
        refused = client.options(
            JOBS, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        foreign = client.get(JOBS, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers
    # Text logs too: the access line of a stream opened with ?key= does not carry the key.
    with httpx.stream(
        "GET", f"{server.url}/api/v2/events/", params={"key": server.key}, timeout=10
    ) as stream:
        assert stream.status_code == 200
    assert server.stop() == 0
    log = server.log()
    assert "/api/v2/events/?key=[redacted]" in log
    assert server.key.split(".", 1)[1] not in log
