"""The one place domain errors become HTTP responses: ``{"error", "message", "detail"}``."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.errors import ConveyorError


def error_body(code: str, message: str, detail: object = None) -> dict[str, object]:
    return {"error": code, "message": message, "detail": detail or {}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ConveyorError)
    async def _domain(_: Request, exc: ConveyorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Token"} if exc.status_code == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.detail), status_code=exc.status_code, headers=headers
        )

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
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("malformed_json", "The request body is not valid JSON.", errors), status_code=400
            )
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        )
        return JSONResponse(error_body("validation_error", message, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body("http_error", str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
