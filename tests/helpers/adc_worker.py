"""A client that speaks Antenna's ADC worker wire exactly (RolnickLab/ami-data-companion,
``trapdata/antenna/{client,datasets,registration}.py``), for the pull-protocol tests and bench.

What it copies: the base URL ends in ``/api/v2``; ``Authorization: Token <key>``; the job list
is ``GET {base}/jobs`` with no trailing slash and ``pipeline__slug__in``, ``ids_only=1``,
``incomplete_only=1``, ``dispatch_mode=async_api``; ``POST {base}/jobs/{id}/tasks/`` with
``{"batch_size": 24}``; the image is downloaded with a plain GET and no key; results go to
``POST {base}/jobs/{id}/result/`` as ``{"results": [{"reply_subject", "result"}]}`` where a result
is a PipelineResultsResponse or ``{"error", "image_id"}``. Redirects are never followed (the
worker's session would drop the key on some of them), so a redirect shows up as a failure.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx

BATCH_SIZE = 24


def detections_result(task: dict[str, Any], pipeline: str, label: str) -> dict[str, Any]:
    """A PipelineResultsResponse for one task: one detection with one terminal classification."""
    now = "2026-12-04T18:00:00"
    return {
        "pipeline": pipeline,
        "algorithms": {},
        "total_time": 0.01,
        "source_images": [{"id": task["image_id"], "url": task["image_url"]}],
        "detections": [
            {
                "source_image_id": task["image_id"],
                "bbox": {"x1": 1.0, "y1": 2.0, "x2": 10.0, "y2": 12.0},
                "algorithm": {"name": "Fake detector", "key": "fake-detector"},
                "timestamp": now,
                "crop_image_url": None,
                "classifications": [
                    {
                        "classification": label,
                        "labels": [label, "other"],
                        "scores": [0.9, 0.1],
                        "logits": [2.0, -1.0],
                        "algorithm": {"name": "Fake classifier", "key": "fake-classifier"},
                        "terminal": True,
                        "timestamp": now,
                    }
                ],
            }
        ],
        "config": {},
    }


def error_result(task: dict[str, Any], message: str) -> dict[str, Any]:
    return {"error": message, "image_id": task["image_id"]}


class AdcWorker:
    def __init__(self, base_url: str, key: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")  # …/api/v2
        self.http = httpx.Client(
            headers={"Authorization": f"Token {key}"}, timeout=timeout, follow_redirects=False
        )
        self.plain = httpx.Client(timeout=timeout, follow_redirects=False)  # image downloads: no key

    def close(self) -> None:
        self.http.close()
        self.plain.close()

    def __enter__(self) -> AdcWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the wire
    def register(self, project_id: int, service_name: str, pipelines: list[dict[str, Any]]) -> httpx.Response:
        return self.http.post(
            f"{self.base_url}/projects/{project_id}/pipelines/",
            json={"processing_service_name": service_name, "pipelines": pipelines},
        )

    def jobs_response(self, slugs: list[str]) -> httpx.Response:
        return self.http.get(
            f"{self.base_url}/jobs",
            params={
                "pipeline__slug__in": ",".join(slugs),
                "ids_only": 1,
                "incomplete_only": 1,
                "dispatch_mode": "async_api",
            },
        )

    def get_jobs(self, slugs: list[str]) -> list[tuple[int, str]]:
        response = self.jobs_response(slugs)
        response.raise_for_status()
        return [(job["id"], job["pipeline_slug"]) for job in response.json()["results"]]

    def tasks_response(
        self, job_id: int, batch_size: int = BATCH_SIZE, client_info: dict[str, Any] | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"batch_size": batch_size}
        if client_info is not None:
            body["client_info"] = client_info
        return self.http.post(f"{self.base_url}/jobs/{job_id}/tasks/", json=body)

    def fetch_tasks(self, job_id: int, batch_size: int = BATCH_SIZE) -> list[dict[str, Any]]:
        response = self.tasks_response(
            job_id, batch_size, client_info={"hostname": socket.gethostname(), "software": "adc-test"}
        )
        response.raise_for_status()
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def download(self, url: str) -> bytes:
        response = self.plain.get(url)
        response.raise_for_status()
        return response.content

    def post_response(self, job_id: int, results: list[dict[str, Any]]) -> httpx.Response:
        return self.http.post(f"{self.base_url}/jobs/{job_id}/result/", json={"results": results})

    def post_results(self, job_id: int, results: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.post_response(job_id, results)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    # ------------------------------------------------------------------ the loop
    def run_job(
        self,
        job_id: int,
        answer: Callable[[dict[str, Any], bytes], dict[str, Any]],
        *,
        download: bool = True,
        max_rounds: int = 10_000,
    ) -> int:
        """Reserve, download, answer and post until the job hands out no more tasks; the number
        of results posted."""
        posted = 0
        for _ in range(max_rounds):
            tasks = self.fetch_tasks(job_id)
            if not tasks:
                return posted
            results = [
                {
                    "reply_subject": task["reply_subject"],
                    "result": answer(task, self.download(task["image_url"]) if download else b""),
                }
                for task in tasks
            ]
            self.post_results(job_id, results)
            posted += len(results)
        return posted
