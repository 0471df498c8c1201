"""Request ids: ``X-Request-ID`` in (kept when sane) or a new one, echoed on every response and
attached to every log record written while the request is handled."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import logs

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so long-lived event streams pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        rid = given if _SANE.match(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
