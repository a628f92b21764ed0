"""The OpenAPI document as a contract: error responses from the one error table, binary media
types, and the Bearer scheme on every operation that needs the key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pagelens.api.protocol import ErrorResponse
from pagelens.errors import error_classes
from pagelens.settings import Settings

BEARER = "bearer"
BINARY = {"schema": {"type": "string", "format": "binary"}}
ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}

# what any request with a body may meet (the body-limit middleware), and what any embedding call may
BODY_ERRORS = (408, 413)
EMBEDDING_ERRORS = (400, *BODY_ERRORS, 429, 503)


def _types_of(status: int) -> str:
    return ", ".join(cls.error_type for cls in error_classes() if cls.http_status == status)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries declaring the error body for `statuses` (described by their types in the
    error table), plus any other 4xx and 5xx."""
    declared: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": _types_of(status)} for status in sorted(statuses)
    }
    declared["4XX"] = {"model": ErrorResponse, "description": "any other client error (404, 405, ...)"}
    declared["5XX"] = {"model": ErrorResponse, "description": "a server error: internal_error or backend_failure (500)"}
    return declared


def install_openapi(app: FastAPI, settings: Settings, open_paths: frozenset[str]) -> None:
    """Build the document once; with a key, declare the Bearer scheme and apply it (and its 401) to
    every operation but those on `open_paths`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            if settings.api_key:
                _apply_bearer(document, open_paths)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _apply_bearer(document: dict[str, Any], open_paths: frozenset[str]) -> None:
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER] = {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"}
    unauthorized = {"description": _types_of(401), "content": {"application/json": {"schema": ERROR_REF}}}
    for path, operations in document.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            operation["security"] = [{BEARER: []}]
            operation.setdefault("responses", {})["401"] = unauthorized
