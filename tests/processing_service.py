"""A small processing service speaking Antenna's protocol, for the remote-pipeline tests.

It really downloads each image from the URL it is sent and looks at it:
- ``brightness``: one detection per image (the whole frame) classified ``bright`` or ``dark`` by
  mean luminance, with the mean as score. An image it cannot decode fails the whole request
  (422), as Antenna's example services do.
- ``flaky``: like ``brightness``, but answers 503 to the first ``config.fail_times`` requests.
- ``slow``: like ``brightness``, after sleeping ``config.sleep`` seconds.

Started on a free local port in a thread (uvicorn), stopped and restarted by the tests.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, ImageStat, UnidentifiedImageError

from tests.helpers import free_port

PIPELINES = ("brightness", "flaky", "slow")


def _pipeline_info(slug: str) -> dict[str, Any]:
    return {
        "name": f"{slug.title()} pipeline",
        "slug": slug,
        "version": 2,
        "version_name": "2.0-test",
        "description": f"Test pipeline {slug}: bright or dark, from the image's mean luminance.",
        "algorithms": [{"name": "Mean luminance", "key": "mean-luminance", "task_type": "classification"}],
        "stages": [{"key": "classify", "name": "Classify"}],
    }


class ProcessingService:
    """The app plus what the tests inspect: calls received and images fetched."""

    def __init__(self) -> None:
        self.process_calls = 0
        self.images_per_call: list[int] = []
        self.fetched_urls: list[str] = []
        self.failures_left = 0
        self.app = self._build()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _classify(self, image_id: str, url: str) -> dict[str, Any]:
        self.fetched_urls.append(url)
        response = httpx.get(url, timeout=10)
        if response.status_code != 200:
            raise HTTPException(422, f"could not fetch image {image_id}: HTTP {response.status_code}")
        try:
            with Image.open(io.BytesIO(response.content)) as image:
                mean = ImageStat.Stat(image.convert("L")).mean[0]
                width, height = image.size
        except (UnidentifiedImageError, OSError) as exc:
            raise HTTPException(422, f"cannot identify image {image_id}: {exc}") from None
        label = "bright" if mean >= 128 else "dark"
        return {
            "source_image_id": image_id,
            "bbox": {"x1": 0, "y1": 0, "x2": width, "y2": height},
            "algorithm": {"name": "Mean luminance", "key": "mean-luminance"},
            "timestamp": "2026-11-23T00:00:00Z",
            "classifications": [
                {
                    "classification": label,
                    "labels": ["dark", "bright"],
                    "scores": [round(1 - mean / 255, 4), round(mean / 255, 4)],
                    "algorithm": {"name": "Mean luminance", "key": "mean-luminance"},
                    "terminal": True,
                    "timestamp": "2026-11-23T00:00:00Z",
                }
            ],
        }

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/info")
        def info() -> dict[str, Any]:
            return {
                "name": "Test Brightness Service",
                "description": "Classifies images as bright or dark.",
                "pipelines": [_pipeline_info(slug) for slug in PIPELINES],
            }

        @app.get("/livez")
        def livez() -> dict[str, bool]:
            return {"status": True}

        @app.get("/readyz")
        def readyz() -> dict[str, list[str]]:
            return {"status": list(PIPELINES)}

        @app.post("/process")
        def process(body: dict[str, Any]) -> JSONResponse:
            self.process_calls += 1
            slug = body.get("pipeline")
            if slug not in PIPELINES:
                raise HTTPException(422, f"Invalid pipeline choice: {slug}")
            config = body.get("config") or {}
            if slug == "flaky" and self.failures_left > 0:
                self.failures_left -= 1
                return JSONResponse({"detail": "warming up"}, status_code=503)
            if slug == "slow":
                time.sleep(float(config.get("sleep", 0)))
            images = body["source_images"]
            self.images_per_call.append(len(images))
            started = time.perf_counter()
            detections = [self._classify(str(i["id"]), str(i["url"])) for i in images]
            return JSONResponse(
                {
                    "pipeline": slug,
                    "algorithms": {},
                    "total_time": time.perf_counter() - started,
                    "source_images": [{"id": i["id"], "url": i["url"]} for i in images],
                    "detections": detections,
                }
            )

        return app

    def start(self) -> ProcessingService:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test processing service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
