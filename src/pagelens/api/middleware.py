"""Pure ASGI middleware: API-key auth, request-body size and time limits, and per-request logs + metrics.

Order (outermost first): observe -> auth -> body limit -> app, so a request without a valid key is
refused before its body is read, and every response, refusals included, is counted and logged.
Refusals are typed errors rendered by `render_error`, like the app's own, and counted by `on_error`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException

from pagelens.api.errors import OnError, render_error
from pagelens.api.ui import prefers_html
from pagelens.errors import InvalidInput, PayloadTooLarge, Unauthorized

log = logging.getLogger("pagelens.access")


class ApiKeyAuth:
    """Require `Authorization: Bearer <key>` (constant-time compare) on every path but `open_paths`,
    and but `html_paths` asked for without a key by a browser (Accept: text/html; their routes answer
    it with a page that holds no data: `GET /` links to the web page)."""

    def __init__(
        self,
        app,
        api_key: str,
        open_paths: frozenset[str] = frozenset({"/health"}),
        on_error: OnError | None = None,
        html_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()
        self.open_paths = open_paths
        self.html_paths = html_paths
        self.on_error = on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        supplied, accept = b"", b""
        for name, value in scope["headers"]:
            if name == b"authorization" and not supplied:
                supplied = value
            elif name == b"accept":
                accept = value
        if not supplied and scope["path"] in self.html_paths and prefers_html(accept.decode("latin-1")):
            return await self.app(scope, receive, send)
        if not hmac.compare_digest(supplied, self._expected):
            reason = "missing API key" if not supplied else "wrong API key"
            error = Unauthorized(f"{reason}: send 'Authorization: Bearer <key>'")
            return await render_error(error, on_error=self.on_error)(scope, receive, send)
        return await self.app(scope, receive, send)


UPLOAD_PATH = re.compile(r"/collections/[^/]+/documents|/collections/import")  # POST: a document or an archive


class BodyLimit:
    """Refuse bodies over `max_bytes` (at once from Content-Length, else while the body streams in)
    with a 413, and bodies that stop arriving for `timeout_seconds` with a 408 that closes the connection.
    Document uploads and collection imports have their own limit, `max_document_bytes` (their bodies
    go to disk as they arrive); `/score` a lower one, `max_score_bytes`: its page embeddings come as
    JSON lists of floats, whose parsing holds the interpreter's lock (60 MB of them stalled every
    other request for over a second)."""

    def __init__(
        self,
        app,
        max_bytes: int,
        timeout_seconds: float = 60.0,
        on_error: OnError | None = None,
        max_document_bytes: int | None = None,
        max_score_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_document_bytes = max_document_bytes or max_bytes
        self.max_score_bytes = min(max_score_bytes or max_bytes, max_bytes)
        self.timeout_seconds = timeout_seconds
        self.on_error = on_error

    def _limit(self, scope) -> tuple[int, str]:
        """The body limit of this request, and what to say when it is over."""
        if scope["method"] == "POST" and UPLOAD_PATH.fullmatch(scope["path"]):
            what = "a collection import" if scope["path"].endswith("/import") else "a document upload"
            return self.max_document_bytes, f"{what} (PAGELENS_MAX_DOCUMENT_BYTES)"
        if scope["method"] == "POST" and scope["path"] == "/score":
            return self.max_score_bytes, "/score (PAGELENS_MAX_SCORE_BYTES); score fewer pages a request"
        return self.max_bytes, "a request body; split the batch"

    def _check_declared(self, scope, limit: int, what: str) -> InvalidInput | PayloadTooLarge | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return InvalidInput("Content-Length is not a number")
                if declared > limit:
                    return PayloadTooLarge(
                        f"request body of {declared:,} bytes is over the limit of {limit:,} for {what}"
                    )
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self._limit(scope)
        refusal = self._check_declared(scope, limit, what)
        if refusal is not None:
            return await render_error(refusal, on_error=self.on_error)(scope, receive, send)
        received = 0
        body_done = False

        # FastAPI's body parsing turns any other exception than an HTTPException into a 400; an HTTPException
        # passes through unchanged, and the app's handler renders it as the typed error of its status.
        async def guarded_receive():
            nonlocal received, body_done
            if body_done:  # later calls wait for the disconnect, however long the response takes
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    message = await receive()
            except TimeoutError:
                message = f"the request body stopped arriving for {self.timeout_seconds:g} s"
                raise HTTPException(408, message, headers={"Connection": "close"}) from None
            if message["type"] != "http.request":
                body_done = True
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body is over the limit of {limit:,} bytes for {what}")
            body_done = not message.get("more_body", False)
            return message

        return await self.app(scope, guarded_receive, send)


class Observe:
    """Log one line per request (route, status, stage timings) and feed the request metrics."""

    def __init__(self, app, on_request: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.on_request = on_request

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            self.on_request(route_path, scope["method"], status, elapsed)
            timings = scope.get("state", {}).get("timings")
            stages = ""
            if timings is not None:
                stages = f" items={timings.items} " + " ".join(
                    f"{name}_ms={seconds * 1000:.1f}" for name, seconds in timings.as_dict().items()
                )
            log.info("%s %s status=%d total_ms=%.1f%s", scope["method"], scope["path"], status, elapsed * 1000, stages)
