"""``/metrics``: Prometheus text exposition (no auth, like /livez; counts only, no names)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (no auth)",
    description="Jobs by status, items processed/failed by pipeline, queue depth (queued chunks), open "
    "chunks by state, local and busy workers, a chunk latency histogram, open event streams. "
    "Figures read from the database cover the whole deployment.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
