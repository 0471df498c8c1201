"""POST time of a job of N ``url`` inputs: the old at-submit path against inputs by reference, on
the same URLs in the same run (issue 15: "a job of 3,000 url inputs keeps the POST open for 50 s").

A local file server (``object_server.py``, 127.0.0.1) serves N distinct URLs. By default they
are the bundled real photos (``conveyor.photos``: 110-790 KB PNG/JPEG files, hard-linked N
times under distinct names), as a folder of images behind a plain HTTP server would be;
``--object-bytes B`` serves N synthetic objects of B bytes instead. Against one ``conveyor
serve`` (embedded mode, SQLite, ``CONVEYOR_ALLOW_PRIVATE_URLS=true``), the same body of N
``{"kind": "url"}`` inputs on ``test-delay`` is posted

- with ``"fetch": "at_submit"`` (every URL fetched during the request, 8 at a time, its bytes
  stored), and
- with the default (``by_reference``: cheap checks, the items keep the URLs),

``--repeat`` times each, alternating, jobs not started (so that no worker competes with the
next POST). Measured: client POST → 201 per submission, and the file server's hit count during
each POST (the at-submit path must read N objects, the by-reference path none). No target is
set by the issue beyond "submit answers at once"; the ratio is reported.

    .venv/bin/python bench/submit_by_reference.py [--urls 3000] [--repeat 1] [--object-bytes B]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    bench_env,
    emit,
    log,
    machine_info,
    object_hits,
    rnd,
    running_server,
    serving,
    temp_dir,
)


def write_objects(root: Path, n: int, object_bytes: int | None) -> tuple[list[str], int]:
    """N files under ``root/p/``; their relative paths and total bytes."""
    folder = root / "p"
    folder.mkdir(parents=True)
    paths: list[str] = []
    total = 0
    if object_bytes is None:
        from conveyor import photos

        originals = []
        for photo in photos.bundled():
            original = root / photo.name
            original.write_bytes(photo.data)
            originals.append((original, photo.name, len(photo.data)))
        for i in range(n):
            original, name, size = originals[i % len(originals)]
            os.link(original, folder / f"{i:05d}-{name}")
            paths.append(f"p/{i:05d}-{name}")
            total += size
    else:
        for i in range(n):
            (folder / f"{i:05d}.bin").write_bytes(
                (f"object {i} ".encode() * (object_bytes // 8 + 1))[:object_bytes]
            )
            paths.append(f"p/{i:05d}.bin")
            total += object_bytes
    return paths, total


def post(client: Any, base: str, urls: list[str], fetch: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"submit-{fetch or 'by_reference'}",
        "pipeline": "test-delay",
        "inputs": [{"kind": "url", "data": url} for url in urls],
        "config": {"item_seconds": 0},
    }
    if fetch:
        body["fetch"] = fetch
    before = object_hits(base)["requests"]
    started = time.monotonic()
    try:
        response = client.post("/api/v2/jobs/", json=body)
    except httpx.TimeoutException:  # the client waits 600 s: report that the POST took longer
        seconds = time.monotonic() - started
        fetched = object_hits(base)["requests"] - before
        log(f"{fetch or 'by_reference'}: no answer after {seconds:.0f} s ({fetched} objects fetched)")
        return {
            "post_seconds": None,
            "timed_out_after_seconds": rnd(seconds, 1),
            "objects_fetched_during_post": fetched,
        }
    seconds = time.monotonic() - started
    fetched = object_hits(base)["requests"] - before
    if response.status_code != 201:
        raise RuntimeError(f"{fetch or 'by_reference'}: {response.status_code} {response.text[:500]}")
    job = response.json()
    log(f"{fetch or 'by_reference'}: 201 in {seconds:.2f} s, {fetched} objects fetched, total {job['total']}")
    return {"post_seconds": rnd(seconds, 3), "objects_fetched_during_post": fetched, "total": job["total"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--urls", type=int, default=3000, help="URL inputs in the job (default 3000)")
    parser.add_argument("--repeat", type=int, default=1, help="submissions per path, alternating (default 1)")
    parser.add_argument(
        "--object-bytes",
        type=int,
        default=None,
        help="synthetic objects of this size (default: the real photos)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 URLs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop the servers
    n = 300 if args.quick else args.urls
    runs: dict[str, list[dict[str, Any]]] = {"by_reference": [], "at_submit": []}
    with temp_dir("conveyor-submit-ref-") as folder:
        files, data_dir = folder / "files", folder / "data"
        files.mkdir()
        data_dir.mkdir()
        paths, total_bytes = write_objects(files, n, args.object_bytes)
        env = bench_env(data_dir, extra={"CONVEYOR_ALLOW_PRIVATE_URLS": "true"})
        with (
            serving(files) as base,
            running_server(data_dir, workers=1, env=env) as server,
            server.client() as client,
        ):
            urls = [f"{base}/{path}" for path in paths]
            post(client, base, urls[:10], None)  # warm-up: first request, imports
            for _ in range(args.repeat):
                runs["by_reference"].append(post(client, base, urls, None))
                runs["at_submit"].append(post(client, base, urls, "at_submit"))
    best = {
        side: min((r["post_seconds"] for r in rs if r["post_seconds"] is not None), default=None)
        for side, rs in runs.items()
    }
    emit(
        {
            "benchmark": "submit_by_reference",
            "machine": machine_info(),
            "params": {
                "urls": n,
                "objects": "bundled photos"
                if args.object_bytes is None
                else f"{args.object_bytes} bytes each",
                "object_bytes_total": total_bytes,
                "repeat": args.repeat,
                "pipeline": "test-delay",
                "database": "sqlite (embedded default)",
            },
            "by_reference": {"best_post_seconds": best["by_reference"], "runs": runs["by_reference"]},
            "at_submit": {"best_post_seconds": best["at_submit"], "runs": runs["at_submit"]},
            "speedup_at_submit_over_by_reference": rnd(best["at_submit"] / best["by_reference"], 1)
            if best["by_reference"] and best["at_submit"]
            else None,
            "notes": [
                "POST time = client POST with every input until the 201; jobs not started.",
                "objects_fetched_during_post = requests the file server answered during that POST.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
