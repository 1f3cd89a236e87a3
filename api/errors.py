"""The one place where keel's errors become HTTP: JSON `{"error": {"code", "message"}}`."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api import audit
from api.schemas import ErrorResponse
from graph.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    KeelError,
    NotFound,
    ProviderError,
    StoreUnavailable,
)

log = logging.getLogger("keel.api")


class PayloadTooLarge(InvalidInput):
    """The request body is larger than `KEEL_MAX_BODY_BYTES`."""

    code = "payload_too_large"


class TooManyFiles(PayloadTooLarge):
    """An upload holds more files than one request may (`MAX_UPLOAD_FILES`)."""

    code = "too_many_files"


class NothingIngested(InvalidInput):
    """No file of an upload could be ingested (each named with its reason)."""

    code = "nothing_ingested"


class MalformedLastEventId(InvalidInput):
    """A `Last-Event-ID` header that is not `<run_id>:<seq>` for this run."""

    code = "invalid_last_event_id"


class UnsupportedFileType(InvalidInput):
    """An uploaded file is not one of the supported document types."""

    code = "unsupported_file_type"


class Unauthorized(KeelError):
    """Authentication is configured and the request has no valid credentials."""

    code = "unauthorized"


class RateLimited(KeelError):
    """The tenant is over its request rate or its daily token quota."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, retry_after_s: float, code: str = "rate_limited"):
        super().__init__(message)
        self.retry_after_s, self.code = retry_after_s, code


class RunFailed(KeelError):
    """A run ended with `run.error`; carries the event's code and retryability."""

    def __init__(self, code: str, message: str, retryable: bool):
        super().__init__(message)
        self.code, self.retryable = code, retryable


STATUS: list[tuple[type[KeelError], int]] = [
    (Unauthorized, 401),
    (RateLimited, 429),
    (PayloadTooLarge, 413),
    (UnsupportedFileType, 415),
    (MalformedLastEventId, 400),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StoreUnavailable, 503),
    (ProviderError, 502),
    (ConfigError, 500),
]


# What each error status means in keel, for the OpenAPI schema.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "malformed request: body not JSON, or a bad Last-Event-ID",
    401: "missing or invalid credentials",
    404: "no such resource for this tenant",
    409: "the thread has a run in progress (multitask strategy reject), the run was cancelled, or a new thread id is taken",
    413: "request body too large, or too many files in one upload",
    415: "unsupported file type",
    422: "invalid request: parameters or body do not match the schema, or a bad input",
    429: "rate limited: requests per minute, daily token quota or failed credential checks",
    503: "a store is unavailable, or the run failed in a way worth retrying",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the error envelope for each of `statuses`."""
    return {s: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def status_for(error: KeelError) -> int:
    """The HTTP status of a keel error (most specific class first)."""
    if isinstance(error, RunFailed):
        if error.code == "cancelled":
            return 409
        return 503 if error.retryable else 500
    return next((status for cls, status in STATUS if isinstance(error, cls)), 500)


def error_headers(error: KeelError) -> dict[str, str] | None:
    """Headers a keel error's response needs (`WWW-Authenticate`, `Retry-After`)."""
    if isinstance(error, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="keel"'}
    if isinstance(error, RateLimited):
        return {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return None


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error envelope."""
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    """Maps keel errors, validation errors, HTTP errors and anything else to the envelope."""

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> JSONResponse:
        if isinstance(exc, NotFound):
            await audit.not_found(request)
        return JSONResponse(
            error_body(exc.code, str(exc)), status_code=status_for(exc), headers=error_headers(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse(error_body("invalid_json", "request body is not valid JSON"), 400)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
