"""The one place where errors become HTTP responses.

Every error body is `{"error": {"type", "message", "index"?}}`. Typed pagelens errors carry their
status (see pagelens.errors); request-validation failures are 400 and name the input index when
the failing field is an item of a list; 404/405 from routing use the same body shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pagelens.errors import Overloaded, PagelensError

log = logging.getLogger(__name__)

_STATUS_TYPES = {
    400: "invalid_input",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    503: "model_not_ready",
}


def error_response(status: int, error_type: str, message: str, *, index: int | None = None, headers=None):
    body: dict[str, Any] = {"type": error_type, "message": message}
    if index is not None:
        body["index"] = index
    return ORJSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_index(location: tuple) -> int | None:
    """The list index in a pydantic error location like ('body', 'inputs', 3)."""
    for part in location[2:]:
        if isinstance(part, int):
            return part
    return None


def _describe_validation(errors: list[dict]) -> tuple[str, int | None]:
    first = errors[0]
    location = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return f"malformed JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    field = ".".join(str(part) for part in location[1:]) or "body"
    message = f"{field}: {first.get('msg')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message, _validation_index(location)


def install_error_handlers(app: FastAPI, on_error=None) -> None:
    """Register the handlers; `on_error(error_type)` is called for every error response (metrics)."""

    def count(error_type: str) -> None:
        if on_error is not None:
            on_error(error_type)

    @app.exception_handler(PagelensError)
    async def pagelens_error(_request: Request, error: PagelensError):
        count(error.error_type)
        headers = {"Retry-After": str(max(1, round(error.retry_after)))} if isinstance(error, Overloaded) else None
        if error.http_status >= 500:
            log.error("%s: %s", error.error_type, error)
        return error_response(error.http_status, error.error_type, error.message, index=error.index, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError):
        count("invalid_input")
        message, index = _describe_validation(list(error.errors()))
        return error_response(400, "invalid_input", message, index=index)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException):
        error_type = _STATUS_TYPES.get(error.status_code, "http_error")
        count(error_type)
        return error_response(error.status_code, error_type, str(error.detail), headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception):
        count("internal_error")
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
