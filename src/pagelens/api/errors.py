"""The one place where errors become HTTP responses.

Every error response comes from `render_error`: status and type from the error's class (see
pagelens.errors), body `{"error": {"type", "message", "index"?}}`, counted by `on_error(type)`.
The exception handlers below and the middleware (auth, body limit) both render through it.
Request-validation failures are `InvalidInput` naming the list index of the failing item;
Starlette's own HTTP exceptions (404/405 from routing) take the class with their status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from pagelens.errors import InvalidInput, Overloaded, PagelensError, Unauthorized, error_classes

log = logging.getLogger(__name__)

OnError = Callable[[str], None]


def render_error(
    error: PagelensError, *, on_error: OnError | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The response for `error`, counted by `on_error`; 429 carries Retry-After, 401 WWW-Authenticate."""
    if on_error is not None:
        on_error(error.error_type)
    merged = dict(headers or {})
    if isinstance(error, Overloaded):
        merged["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, Unauthorized):
        merged.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status, headers=merged or None)


def error_for_status(status: int, message: str) -> PagelensError:
    """The typed error of an HTTP status (the first class with it, parents first); `http_error` if none."""
    cls = next((cls for cls in error_classes() if cls.http_status == status), None)
    if cls is not None:
        return cls(message)
    error = PagelensError(message)
    error.http_status, error.error_type = status, "http_error"
    return error


def _validation_index(location: tuple) -> int | None:
    """The list index in a pydantic error location like ('body', 'inputs', 3)."""
    for part in location[2:]:
        if isinstance(part, int):
            return part
    return None


def _describe_validation(errors: list[dict]) -> InvalidInput:
    first = errors[0]
    location = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return InvalidInput(f"malformed JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}")
    field = ".".join(str(part) for part in location[1:]) or "body"
    message = f"{field}: {first.get('msg')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidInput(message, index=_validation_index(location))


def install_error_handlers(app: FastAPI, on_error: OnError | None = None) -> None:
    """Register the handlers; `on_error(error_type)` is called for every error response (metrics)."""

    @app.exception_handler(PagelensError)
    async def pagelens_error(_request: Request, error: PagelensError):
        if error.http_status >= 500:
            log.error("%s: %s", error.error_type, error)
        return render_error(error, on_error=on_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError):
        return render_error(_describe_validation(list(error.errors())), on_error=on_error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException):
        typed = error_for_status(error.status_code, str(error.detail))
        return render_error(typed, on_error=on_error, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception):
        log.exception("unhandled error")
        return render_error(PagelensError("internal server error"), on_error=on_error)
