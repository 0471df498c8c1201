"""A static file server on 127.0.0.1 for the benchmarks of inputs by reference (run as a process).

Serves the files under ``--root`` (``GET /<relative path>``, HTTP/1.1 keep-alive, ``uvicorn`` with
its fastest loop and parser), streams big files (a manifest) in 1 MiB pieces, and counts what it
served: ``GET /_hits`` answers ``{"requests": N, "bytes": B, "by_dir": {top folder: N}}`` (itself not
counted; files at the root count under ""), so that a
benchmark can tell whether Conveyor's workers really fetched the inputs it measures.
One process, one event loop: it shares the machine's cores with whatever fetches from it, and is
the same server for a benchmark's Conveyor run and its baseline.

    python bench/object_server.py --root DIR --port PORT

``serving(root)`` in ``common.py`` starts it in a subprocess and waits until it answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

PIECE = 1024 * 1024
HITS: dict[str, Any] = {"requests": 0, "bytes": 0, "by_dir": {}}


def make_app(root: Path) -> Any:
    root = root.resolve()
    small: dict[tuple[int, int], bytes] = {}  # small files, read once

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/_hits":
            await _answer(send, 200, json.dumps(HITS).encode(), "application/json")
            return
        target = (root / path.lstrip("/")).resolve()
        if root not in target.parents or not target.is_file():
            await _answer(send, 404, b"not found", "text/plain")
            return
        stat = target.stat()
        size = stat.st_size
        HITS["requests"] += 1
        HITS["bytes"] += size
        top = path.lstrip("/").split("/", 1)[0] if "/" in path.lstrip("/") else ""
        HITS["by_dir"][top] = HITS["by_dir"].get(top, 0) + 1
        if size <= 4 * PIECE:
            body = small.get((stat.st_dev, stat.st_ino))  # hard links share one copy
            if body is None:
                body = target.read_bytes()
                if len(small) < 100_000:
                    small[(stat.st_dev, stat.st_ino)] = body
            await _answer(send, 200, body, "application/octet-stream")
            return
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with target.open("rb") as handle:
            while piece := handle.read(PIECE):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _answer(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvicorn

    os.chdir(args.root)
    uvicorn.run(
        make_app(args.root),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    sys.exit(main())
