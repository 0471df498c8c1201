"""The bad-input catalogue, beyond tests/integration/test_api_bad_input.py and test_inputs_*:
hostile images, address spellings and redirects that reach the server's own network, CR/LF in
names, absurd numbers and pages, malformed bodies on every dialect. Each is a clear 4xx or one
failed item with a clear error; never a 5xx, a hang, a dead worker or rows left behind."""

from __future__ import annotations

import base64
import csv
import io
import json
import socket
import sqlite3
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from conveyor.errors import AddressNotAllowed
from conveyor.inputs import url as url_inputs
from conveyor.pipelines import imaging
from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import Server
from tests.helpers.api import JOBS, all_items, assert_error, count_named, finished, unique
from tests.helpers.inputs import FileServer


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


def _rows(server: Server) -> tuple[int, int]:
    """(jobs, items) rows in the server's database, read straight from SQLite."""
    with sqlite3.connect(server.data_dir / "conveyor.db") as db:
        return (
            db.execute("SELECT count(*) FROM jobs").fetchone()[0],
            db.execute("SELECT count(*) FROM items").fetchone()[0],
        )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels: a few KB on the wire."""
    row = b"\x00" + bytes((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- images
def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    """Pillow only warns between MAX_IMAGE_PIXELS and twice it, and would decode the ~100 Mpx image
    (hundreds of MB); Conveyor refuses it from its header."""
    bomb = bomb_png(10_000, 10_000)
    assert len(bomb) < 50_000
    tracemalloc.start()
    try:
        with pytest.raises(Image.DecompressionBombError, match="decompression bomb"):
            imaging.open_rgb(bomb)
        assert imaging.sample_from_bytes(bomb) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated for a refused image"


def test_bombs_and_corrupt_images_fail_alone_and_the_workers_live(
    client: httpx.Client, shared_server: Server
) -> None:
    pngs = holdout_pngs(limit=2)
    good = [data for _, data, _ in pngs]
    hostile = {
        "bomb-warned": bomb_png(10_000, 10_000),  # 100 Mpx: between Pillow's warning and its error
        "bomb-refused": bomb_png(
            20_000, 20_000
        ),  # 400 Mpx: Pillow refuses it (digits used to fail the batch)
        "truncated": good[0][: len(good[0]) // 2],
        "garbage": b"\x89PNG\r\n\x1a\n" + b"\xff" * 64,
        "not-an-image": b"just some text",
        "gif-header-only": b"GIF89a\xff\xff\xff\xff",
    }
    inputs = [{"name": "good-0", "kind": "base64", "data": base64.b64encode(good[0]).decode()}]
    inputs += [
        {"name": n, "kind": "base64", "data": base64.b64encode(d).decode()} for n, d in hostile.items()
    ]
    inputs += [{"name": "good-1", "kind": "base64", "data": base64.b64encode(good[1]).decode()}]
    restarts = sum(w["restarts"] for w in client.get("/api/v2/workers/pool/").json())
    response = client.post(
        f"{JOBS}?start_now=true",
        json={
            "name": unique("hostile-images"),
            "pipeline": "digits",
            "inputs": inputs,
            "max_failed_ratio": 1,
            "config": {"batch_size": 16},  # one batch: a bad image must not fail its neighbours
        },
    )
    assert response.status_code == 201, response.text
    job = finished(client, response.json()["id"], timeout=120)
    assert job["status"] == "SUCCESS", job
    items = {i["name"]: i for i in all_items(client, job["id"])}
    for index, (_, _, label) in enumerate(pngs):
        assert items[f"good-{index}"]["status"] == "SUCCESS"
        assert items[f"good-{index}"]["result"]["label"] == label
    for name in hostile:
        assert items[name]["status"] == "FAILURE", items[name]
        assert items[name]["error"].startswith("not a readable image"), items[name]
    for name in ("bomb-warned", "bomb-refused"):
        assert "decompression bomb" in items[name]["error"], items[name]
        sample = client.get(f"{JOBS}{job['id']}/items/{items[name]['id']}/sample")
        assert sample.status_code == 404
    assert (job["completed"], job["failed"]) == (2, len(hostile))
    workers = client.get("/api/v2/workers/pool/").json()
    assert all(w["alive"] for w in workers)
    assert sum(w["restarts"] for w in workers) == restarts


# --------------------------------------------------------------------------- SSRF
@pytest.mark.parametrize(
    "address",
    [
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",  # octal
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://172.16.5.4/",
        "http://192.168.1.1:8080/admin",
        "http://224.0.0.1/",
        "http://169.254.169.254/latest/meta-data/iam/",
    ],
)
def test_other_spellings_of_private_addresses_are_refused(
    client: httpx.Client, shared_server: Server, address: str
) -> None:
    before = _rows(shared_server)
    name = unique("ssrf")
    response = client.post(
        JOBS,
        json={"name": name, "pipeline": "digits", "inputs": [{"kind": "url", "data": address, "name": "x"}]},
    )
    error = assert_error(response, 400)
    assert error["error"] == "address_not_allowed", error
    assert _rows(shared_server) == before


class _Redirector:
    """An HTTP server on 127.0.0.2 (standing in for a public host) that redirects every request."""

    def __init__(self, to: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.httpd.server_address[1]}/start"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_redirect_into_the_private_network_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no public address, so 127.0.0.2 plays a public host: only it passes the
    address check. Its redirects to loopback, the metadata address or a private name are refused
    at the hop, and the private target is never contacted."""
    real = url_inputs.is_public
    monkeypatch.setattr(url_inputs, "is_public", lambda a: str(a) == "127.0.0.2" or real(a))
    files = FileServer()
    secret = files.add("/secret", b"internal")
    policy = url_inputs.UrlPolicy(max_bytes=1000, timeout=5, max_redirects=3, allow_private=False)
    try:
        for target in [secret, secret.replace("127.0.0.1", "localhost"), "http://169.254.169.254/latest/"]:
            redirector = _Redirector(target)
            try:
                with pytest.raises(AddressNotAllowed) as refused:
                    url_inputs.fetch(redirector.url, "r", policy)
            finally:
                redirector.close()
            assert "CONVEYOR_ALLOW_PRIVATE_URLS" in refused.value.message
        assert files.hits == []
    finally:
        files.close()


# --------------------------------------------------------------------------- names
def test_cr_lf_in_names_stays_inside_the_json_and_csv(client: httpx.Client) -> None:
    name = unique("crlf") + "\r\nX-Injected: yes"
    item_names = ["a\r\nX-Injected: yes", 'b",injected\nrow', "=cmd|' /C calc'!A0"]
    response = client.post(
        f"{JOBS}?start_now=true",
        json={
            "name": name,
            "pipeline": "test-delay",
            "inputs": [{"name": n, "kind": "text", "data": "x"} for n in item_names],
        },
    )
    assert response.status_code == 201, response.text
    assert "x-injected" not in response.headers
    job = finished(client, response.json()["id"])
    assert job["name"] == name
    exported = client.get(f"{JOBS}{job['id']}/results/", params={"format": "csv"})
    assert exported.status_code == 200 and "x-injected" not in exported.headers
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["name"] for r in rows] == item_names  # quoted, so no extra rows or columns
    # Modzy's chunk route takes names from the path.
    opened = client.post("/api/jobs", json={"model": {"identifier": "test-delay", "version": "1"}})
    assert opened.status_code in (200, 201), opened.text
    ident = opened.json()["jobIdentifier"]
    chunk = client.post(f"/api/jobs/{ident}/a%0D%0AX-Injected:%20yes/input", files={"input": ("c", b"data")})
    assert chunk.status_code < 500 and "x-injected" not in chunk.headers, chunk.text
    assert client.delete(f"/api/jobs/{ident}").status_code == 200


# --------------------------------------------------------------------------- numbers and pages
def test_huge_page_sizes_are_capped_and_bad_ones_refused(client: httpx.Client) -> None:
    job = finished(
        client,
        client.post(
            f"{JOBS}?start_now=true",
            json={
                "name": unique("pages"),
                "pipeline": "test-delay",
                "inputs": [{"kind": "text", "data": "a"}],
            },
        ).json()["id"],
    )
    for path in [JOBS, f"{JOBS}{job['id']}/items/", f"{JOBS}{job['id']}/logs/", "/api/v2/collections/"]:
        page = client.get(path, params={"limit": 10**12})
        assert page.status_code == 200, (path, page.text)
        body = page.json()
        listed = body["results"] if isinstance(body, dict) and "results" in body else body
        assert len(listed) <= 1000
        for bad in (0, -1, "many", 2**64):
            assert 400 <= client.get(path, params={"limit": bad}).status_code < 500, (path, bad)
    history = client.get("/api/jobs/history", params={"per-page": 10**12})
    assert history.status_code == 200 and len(history.json()) <= 1000
    for params in ({"per-page": 0}, {"per-page": -5}, {"page": 0}, {"page": -1}, {"per-page": "all"}):
        answer = client.get("/api/jobs/history", params=params)
        assert answer.status_code == 400 and answer.json()["statusCode"] == 400, (params, answer.text)


def _native(extra: str) -> tuple[str, bytes]:
    return JOBS, (
        '{"pipeline": "test-delay", "inputs": [{"kind": "text", "data": "a"}], ' + extra + "}"
    ).encode()


def _modzy(extra: str) -> tuple[str, bytes]:
    model = '"model": {"identifier": "test-delay", "version": "1"}'
    sources = '"input": {"type": "text", "sources": {"a": {"i": "x"}}}'
    return "/api/jobs", ("{" + f"{model}, {sources}, {extra}" + "}").encode()


# Raw JSON: its NaN and Infinity literals are what Python's parser lets through.
ABSURD: dict[str, tuple[str, bytes]] = {
    "timeout-over-30-days": _native('"timeout": 2592000001'),
    "timeout-fraction": _native('"timeout": 1.5'),
    "timeout-huge": _native('"timeout": 1e30'),
    "timeout-infinity": _native('"timeout": Infinity'),
    "delay-over-a-day": _native('"delay": 86401'),
    "delay-nan": _native('"delay": NaN'),
    "delay-infinity": _native('"delay": Infinity'),
    "ratio-nan": _native('"max_failed_ratio": NaN'),
    "item-seconds-nan": _native('"config": {"item_seconds": NaN}'),
    "item-seconds-huge": _native('"config": {"item_seconds": 1e308}'),
    "batch-size-huge": _native('"config": {"batch_size": 1000000000000}'),
    "limit-negative": _native('"limit": -3'),
    "modzy-timeout-negative": _modzy('"timeout": -1'),
    "modzy-timeout-nan": _modzy('"timeout": NaN'),
    "modzy-timeout-huge": _modzy('"timeout": 99999999999999999999999'),
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_absurd_numbers_are_4xx_and_leave_no_rows(
    client: httpx.Client, shared_server: Server, case: str
) -> None:
    path, raw = ABSURD[case]
    name = unique("absurd")
    before = _rows(shared_server)
    named = raw.replace(b"{", b'{"name": "' + name.encode() + b'", ', 1)
    response = client.post(path, content=named, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    if path.startswith("/api/v2"):
        assert response.json()["error"] in ("validation_error", "invalid_input"), response.text
    else:
        assert response.json()["statusCode"] == 400, response.text
    assert _rows(shared_server) == before
    assert count_named(client, name) == 0


# --------------------------------------------------------------------------- bodies
@pytest.mark.parametrize(
    ("path", "content_type", "raw"),
    [
        ("/api/jobs", "application/json", b"{not json"),
        ("/api/jobs", "application/json", b'{"model": {"identifier": "test-delay"'),
        ("/api/jobs", "text/plain", b'{"model": {"identifier": "test-delay", "version": "1"}}'),
        ("/api/jobs", "application/json", b"[]"),
        ("/api/v2/collections/", "application/json", b"{bad"),
        ("/api/v2/collections/", "application/xml", b"<collection/>"),
        ("/api/v2/keys/", "application/json", b"\xff\xfe"),
        ("/api/v2/projects/", "application/json", b'{"slug": '),
        ("/api/v2/jobs/upload/", "multipart/form-data; boundary=x", b"--x\r\nnot a part"),
        ("/api/v2/jobs/upload/", "multipart/form-data", b"no boundary"),
    ],
)
def test_malformed_bodies_on_every_dialect_are_400_or_422(
    client: httpx.Client, shared_server: Server, path: str, content_type: str, raw: bytes
) -> None:
    before = _rows(shared_server)
    response = client.post(path, content=raw, headers={"content-type": content_type})
    assert response.status_code in (400, 413, 415, 422), (path, response.status_code, response.text)
    body = response.json()
    assert ("statusCode" in body) if path == "/api/jobs" else ("error" in body and "message" in body), body
    assert _rows(shared_server) == before


def test_invalid_base64_in_modzy_embedded_inputs_is_400(client: httpx.Client, shared_server: Server) -> None:
    before = _rows(shared_server)
    for data in ["data:image/png;base64,@@@@", "data:image/png;base64,abc", "not a data uri"]:
        response = client.post(
            "/api/jobs",
            json={
                "model": {"identifier": "digits", "version": "1"},
                "input": {"type": "embedded", "sources": {"s": {"image": data}}},
            },
        )
        assert response.status_code == 400, (data, response.text)
        assert response.json()["statusCode"] == 400
    assert _rows(shared_server) == before


@pytest.mark.parametrize("path", ["/api/v2/jobs/", "/api/jobs", "/api/v2/collections/1/items/upload/"])
def test_a_declared_body_over_the_cap_is_413_at_once(shared_server: Server, path: str) -> None:
    """The Content-Length alone decides: the answer comes before any byte of the body is sent
    (no hang waiting for 100 GB), in the dialect's error shape."""
    host, port = shared_server.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {shared_server.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000000\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "too_large"
    assert ("statusCode" in body) == (path == "/api/jobs")
