"""Reading a pagelens server's responses: the typed error an error body stands for (the class of
`pagelens.errors` its `type` names), and the events of a `text/event-stream` body. Used by
`pagelens.client`, which re-exports `error_from_response` and `job_error`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import httpx

from pagelens import errors


def error_from_response(response: httpx.Response) -> errors.PagelensError:
    """The typed error a pagelens error response stands for: the class with the body's `type`, else a
    PagelensError carrying the response's status and type (a proxy's page, a newer server's type)."""
    try:
        body = response.json()["error"]
        error_type, message, index = body["type"], body["message"], body.get("index")
    except (ValueError, KeyError, TypeError):
        error_type, message, index = "http_error", f"HTTP {response.status_code}: {response.text[:200]}", None
    if error_class(error_type) is errors.Overloaded:
        error = errors.Overloaded(message, retry_after=retry_after(response, 1.0))
        return error if index is None else error.with_index(index)
    return typed_error(error_type, message, index=index, status=response.status_code)


def job_error(job: dict) -> errors.PagelensError:
    """The typed error a failed or cancelled job (`GET /jobs/{id}`) ended with (cancelled: Conflict,
    its collection deleted: NotFound, a PDF that would not open: UnprocessableDocument, ...)."""
    detail = job.get("error") or {"type": "internal_error", "message": f"the ingest job ended {job.get('state')}"}
    return typed_error(detail.get("type"), detail.get("message", ""))


def error_class(error_type: object) -> type[errors.PagelensError] | None:
    return next((cls for cls in errors.error_classes() if cls.error_type == error_type), None)


def typed_error(error_type: object, message: str, *, index: int | None = None, status: int = 500):
    """The class whose `error_type` this is, else a PagelensError carrying the status and type."""
    cls = error_class(error_type)
    if cls is None:
        error = errors.PagelensError(message, index=index)
        error.http_status, error.error_type = status, str(error_type)
        return error
    return cls(message, index=index)


def retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def server_sent_events(lines: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """`(event, JSON data)` of a `text/event-stream` body's lines; comments (`:` lines) skipped."""
    event, data = "message", []
    for line in lines:
        if not line:  # an event ends
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)  # a line starting with ':' (field "") is a comment: skipped
