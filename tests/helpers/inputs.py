"""Fixtures for the input-kind tests: a capped server that may fetch local URLs, a file server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server, start_server
from tests.helpers.backends import postgres_database

# Small caps so that "over the cap" costs a few kilobytes.
INPUT_CAP = 2000
JOB_CAP = 5000
REQUEST_CAP = 20000
INPUTS_ENV = {
    "CONVEYOR_MAX_INPUT_BYTES": str(INPUT_CAP),
    "CONVEYOR_MAX_JOB_BYTES": str(JOB_CAP),
    "CONVEYOR_MAX_REQUEST_BYTES": str(REQUEST_CAP),
    "CONVEYOR_MAX_INPUTS_PER_JOB": "20",
    "CONVEYOR_ALLOW_PRIVATE_URLS": "true",
    "CONVEYOR_URL_TIMEOUT_SECONDS": "1.5",
    "CONVEYOR_URL_MAX_REDIRECTS": "3",
}


def serve_inputs(tmp_path_factory: pytest.TempPathFactory, backend: str = "sqlite") -> Iterator[Server]:
    """A server with small input caps that allows private URLs (so it can fetch from the tests).
    Test modules make it a module-scoped fixture: ``inputs_server = module_fixture(serve_inputs)``."""
    with contextlib.ExitStack() as stack:
        env = dict(INPUTS_ENV)
        if backend == "postgresql":
            env["CONVEYOR_DATABASE_URL"] = stack.enter_context(postgres_database())
        server = start_server(tmp_path_factory.mktemp(f"inputs-{backend}"), workers=1, extra_env=env)
        yield server
        server.stop()


def module_fixture(function: Callable[..., Any]) -> Any:
    return pytest.fixture(scope="module")(function)


def staged_leftovers(server: Server) -> list[Path]:
    """Files left in the server's upload staging area (there must be none between requests)."""
    root = server.data_dir / "tmp"
    return sorted(root.rglob("*")) if root.exists() else []


class FileServer:
    """A local HTTP server the tests fill with paths: bytes, redirects, slow bodies."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.sequences: dict[str, list[tuple[int, bytes]]] = {}  # successive answers, then the route
        self.hits: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0  # how many requests it served at the same time, at most
        routes, sequences, hits, lock, counter = (
            self.routes,
            self.sequences,
            self.hits,
            threading.Lock(),
            self,
        )

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                with lock:
                    counter.in_flight += 1
                    counter.most_in_flight = max(counter.most_in_flight, counter.in_flight)
                self.counted = True
                try:
                    self._answer()
                finally:
                    self._leave()

            def _leave(self) -> None:
                # Called before the last byte goes out, so that a client fetching one URL after
                # the other can never overlap two requests here.
                if self.counted:
                    self.counted = False
                    with lock:
                        counter.in_flight -= 1

            def _answer(self) -> None:
                with lock:
                    queued = sequences.get(self.path)
                    next_answer = queued.pop(0) if queued else None
                if next_answer is not None:
                    status, headers, body, drip = next_answer[0], {}, next_answer[1], 0.0
                else:
                    status, headers, body, drip = routes.get(self.path, (404, {}, b"not found", 0.0))
                self.send_response(status)
                for key, value in headers.items():
                    if value:  # an empty value drops the header (e.g. no Content-Length)
                        self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if drip:
                    try:
                        for index, byte in enumerate(body):
                            threading.Event().wait(drip)
                            if index == len(body) - 1:
                                self._leave()
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    except OSError:
                        pass
                else:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(
        self,
        path: str,
        body: bytes,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        drip: float = 0.0,
    ) -> str:
        self.routes[path] = (status, headers or {}, body, drip)
        return self.base + path

    def answer_first(self, path: str, *answers: tuple[int, bytes]) -> str:
        """Answer the next requests for ``path`` with these (status, body) pairs, one each; then as
        its route says (404 without one)."""
        self.sequences[path] = list(answers)
        return self.base + path

    def redirect(self, path: str, to: str, status: int = 302) -> str:
        return self.add(path, b"", status=status, headers={"Location": to})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def serve_references(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    """A server for jobs by reference: moto's S3 at ``s3_endpoint`` with its test credentials,
    private URLs allowed (the FileServer is on loopback), small chunks so listings take pages."""
    env = {
        "CONVEYOR_ALLOW_PRIVATE_URLS": "true",
        "CONVEYOR_CHUNK_SIZE": "100",
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
    }
    server = start_server(tmp_path_factory.mktemp("references"), workers=1, extra_env=env)
    yield server
    server.stop()
