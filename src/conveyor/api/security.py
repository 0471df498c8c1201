"""Security headers on every response, and CORS when configured (``CONVEYOR_CORS_ORIGINS``).

Every answer says ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``. The dashboard's pages also carry a Content-Security-Policy
that allows only the server's own scripts, styles and API (plus ``blob:``/``data:`` images for
the results gallery) and no framing. The OpenAPI pages (``/docs``, ``/redoc``) load FastAPI's
Swagger UI from its CDN and keep no CSP. A pure ASGI middleware, so event streams pass through.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
DASHBOARD_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
#: Pages FastAPI serves with inline and CDN scripts: a strict CSP would blank them.
OPEN_DOC_PATHS = ("/docs", "/redoc")
#: Headers a cross-origin caller may send and read (the API's own).
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"]
CORS_EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "Content-Disposition"]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path.startswith(OPEN_DOC_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(k, v) for k, v in ALWAYS if k not in names]
                content_type = dict(headers).get(b"content-type", b"")
                if not docs and b"content-security-policy" not in names:
                    html = content_type.startswith(b"text/html")
                    extra.append((b"content-security-policy", DASHBOARD_CSP if html else API_CSP))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_origins(setting: str) -> list[str]:
    """``CONVEYOR_CORS_ORIGINS``: comma-separated origins (``*`` for any); empty: no CORS."""
    return [o.strip().rstrip("/") for o in setting.split(",") if o.strip()]
