"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status, never a 422.

Validation failures are 400 `invalid_request_error` (clients and routers treat 4xx as "fix the request"
and 5xx as "fail over"); a prompt that does not fit is 400 `context_length_exceeded` with the counts.
"""

from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hytron.serve.protocol import ErrorResponse, TooDeep, Unsupported

log = logging.getLogger("hytron.serve")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | int | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code if code is not None else status}}


class _AsciiJSON(JSONResponse):
    """Escapes non-ASCII: an error that quotes the client's text can never fail to encode (lone surrogates)."""

    def render(self, content) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def error_response(status: int, message: str, param: str | None = None, code=None, headers=None) -> JSONResponse:
    return _AsciiJSON(error_body(status, message, param, code), status_code=status, headers=headers)


def sse_error(status: int, message: str) -> str:
    """An error after a stream has started (status already 200): one SSE event, then [DONE]."""
    return f"data: {json.dumps(error_body(status, message))}\n\ndata: [DONE]\n\n"


# a type mismatch inside a union only says "this branch does not apply": report a real problem if any
_TYPE_ERRORS = {"string_type", "list_type", "int_type", "float_type", "bool_type", "dict_type", "model_type",
                "model_attributes_type", "none_required", "int_parsing", "float_parsing", "int_from_float"}
_FIELD = re.compile(r"[a-z_][a-z0-9_]*|\d+")


def _location(loc) -> str:
    """`messages.0.content` from pydantic's loc, without `body` and the union branch tags (`str`, `list[...]`)."""
    parts = [str(x) for x in loc if x != "body"]
    return ".".join(p for p in parts if _FIELD.fullmatch(p) and p not in ("str", "int", "float", "bool", "none"))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    if errors[0].get("type") == "json_invalid":
        e = errors[0]
        return f"request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}", None
    real = [e for e in errors if e.get("type") not in _TYPE_ERRORS] or errors
    e = max(real, key=lambda e: len(e.get("loc", ())))  # the union branch that got furthest
    fields = {_location(x.get("loc", ())) for x in real}
    param = _location(e.get("loc", ())) or None
    where = f"{param}: " if param else "request body: "
    more = f" (and {len(fields) - 1} more field{'s' if len(fields) > 2 else ''})" if len(fields) > 1 else ""
    return f"{where}{e.get('msg', 'invalid value')}{more}", param


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(TooDeep)
    async def _too_deep(request: Request, exc: TooDeep):
        return error_response(400, str(exc), exc.param)

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, exc: Unsupported):
        return error_response(400, str(exc), exc.param, "unsupported_parameter")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


ERROR_RESPONSES = {s: {"model": ErrorResponse, "description": d} for s, d in [
    (400, "invalid request"), (401, "missing or wrong API key"), (404, "unknown model"),
    (413, "request body too large"), (415, "the body is not sent as application/json"), (429, "queue full"),
    (500, "server error"), (503, "engine unavailable")]}
