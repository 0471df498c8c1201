"""The one place domain errors become HTTP responses: ``{"error", "message", "detail"}``."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.api.schemas import modzy
from conveyor.errors import (
    ConveyorError,
    DatabaseUnavailable,
    StorageFull,
    TooManyRequests,
    storage_full,
)

log = logging.getLogger(__name__)


def error_body(code: str, message: str, detail: object = None) -> dict[str, object]:
    return {"error": code, "message": message, "detail": detail or {}}


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    detail: object = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Native shape, or Modzy's (``statusCode``/``status``/``message``) under the Modzy dialect."""
    if modzy.is_modzy_path(request.url.path):
        body = modzy.error_body(status_code, code, message, detail)
    else:
        body = error_body(code, message, detail)
    return JSONResponse(body, status_code=status_code, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ConveyorError)
    async def _domain(request: Request, exc: ConveyorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Token"} if exc.status_code == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(request, exc.status_code, exc.code, exc.message, exc.detail, headers)

    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        """A full disk (507) or a lost database connection (503) is said as such; nothing was
        stored (the transaction rolled back). Anything else stays a 500 with its traceback."""
        if storage_full(exc):
            log.error("%s %s: storage full: %s", request.method, request.url.path, exc)
            return await _domain(
                request,
                StorageFull(
                    "The server's storage is full; nothing was stored. Retry once space is freed.",
                    reason=str(getattr(exc, "orig", None) or exc),
                ),
            )
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            log.error("%s %s: database connection lost: %s", request.method, request.url.path, exc.orig)
            return await _domain(
                request, DatabaseUnavailable("The database connection was lost; retry the request.")
            )
        raise exc

    app.add_exception_handler(DBAPIError, _storage)
    app.add_exception_handler(OSError, _storage)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI parses the body before it runs the auth dependency: an anonymous caller must
        # get 401, not a description of its body.
        if request.url.path.startswith("/api/") and getattr(request.state, "principal", None) is None:
            from conveyor.api.deps import authenticate

            try:
                await run_in_threadpool(authenticate, request)
            except ConveyorError as auth_error:
                return await _domain(request, auth_error)
        errors = json.loads(json.dumps(exc.errors(), default=str))
        if modzy.is_modzy_path(request.url.path):
            errors = modzy.redact(errors)  # an aws-s3 input's secretAccessKey is not echoed back
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(
                request, 400, "malformed_json", "The request body is not valid JSON.", errors
            )
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        )
        # Modzy's API (and its client) treat every invalid request as 400.
        status_code = 400 if modzy.is_modzy_path(request.url.path) else 422
        return error_response(request, status_code, "validation_error", message, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request, exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None)
        )
