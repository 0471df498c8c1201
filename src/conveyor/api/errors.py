"""The one place domain errors become HTTP responses: ``{"error", "message", "detail"}``."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, DBAPIError
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


def _finite(value: Any) -> Any:
    """``value`` with infinite and NaN floats (echoed inputs such as ``-Infinity``) as strings:
    JSON responses have no such numbers (found by schemathesis: they made the 422 itself a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


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
            from conveyor.api.deps import authenticate, authenticate_worker, is_worker_route

            check = authenticate_worker if is_worker_route(request.url.path) else authenticate
            try:
                await check(request)
            except ConveyorError as auth_error:
                return await _domain(request, auth_error)
        errors = _finite(json.loads(json.dumps(exc.errors(), default=str)))
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

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses, e.g. a NUL character in a text on PostgreSQL, or a number
        # out of a column's range: the statement (and its transaction) failed, nothing was
        # written. Only the driver's one-line reason is shown, never the statement or its values.
        reason = str(getattr(exc, "orig", exc) or "invalid value").strip().splitlines()[0]
        return error_response(
            request, 400, "invalid_input", f"The database refuses a value of this request: {reason}."
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request, exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None)
        )


# --------------------------------------------------------------------------- OpenAPI
class ErrorBody(BaseModel):
    """Every native error: a stable code, a readable message, and details (a list for 422)."""

    error: str = Field(description="`invalid_input`, `not_found`, `too_large`, `validation_error`, ...")
    message: str
    detail: dict[str, Any] | list[Any] = Field(default_factory=dict)


class ModzyErrorBody(BaseModel):
    """Errors under the Modzy dialect: Modzy's fields plus Conveyor's code and details."""

    statusCode: int
    status: str
    message: str
    error: str
    detail: dict[str, Any] | list[Any] = Field(default_factory=dict)


_MEANINGS = {
    400: "Invalid request (for the Modzy dialect: also a body that does not validate).",
    401: "No API key, or an unknown, revoked or expired one.",
    403: "The key's role may not do this here.",
    404: "No such object in the key's scope (another tenant's objects are 404 too).",
    409: "Not allowed in the object's current state.",
    413: "Over a size cap (`CONVEYOR_MAX_*`).",
    422: "A parameter or body field does not validate; the message names it.",
    429: "Over a per-key quota; see the `Retry-After` header.",
}
#: Submissions are the only requests a quota can refuse.
_QUOTA_PATHS = {("post", "/api/v2/jobs/"), ("post", "/api/v2/jobs/upload/"), ("post", "/api/jobs")}


def document_errors(document: dict[str, Any]) -> None:
    """Add the error answers every ``/api/`` operation can give, with their body schemas, to an
    OpenAPI document: what clients (and schemathesis) check the answers against."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, ModzyErrorBody):
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, operations in document.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        modzy_dialect = modzy.is_modzy_path(path)
        ref = {"$ref": f"#/components/schemas/{'ModzyErrorBody' if modzy_dialect else 'ErrorBody'}"}
        for method, operation in operations.items():
            codes = [400, 401, 403, 404, 413]
            if method in ("post", "put", "delete"):
                codes.append(409)
            if (method, path) in _QUOTA_PATHS:
                codes.append(429)
            responses = operation.setdefault("responses", {})
            if modzy_dialect:
                responses.pop("422", None)  # Modzy's clients expect 400 for every invalid request
            else:
                codes.append(422)
            for code in codes:
                entry = responses.setdefault(str(code), {})
                entry.setdefault("description", _MEANINGS[code])
                entry["content"] = {"application/json": {"schema": ref}}
            if "429" in responses:
                responses["429"]["headers"] = {
                    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
                }


def install_openapi(app: FastAPI) -> None:
    """Serve the generated OpenAPI document with :func:`document_errors` applied (once)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
