"""`POST /collections/{c}/ask`: an answer over the collection's pages, whole or streamed as
server-sent events. The work is the ask service's (pagelens.service.ask)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from pagelens.api.openapi import BODY_ERRORS, error_responses
from pagelens.api.protocol import AskRequest, AskResponse
from pagelens.api.routes.collections import CLIENT_CLOSED_REQUEST, DISCONNECT_POLL_SECONDS
from pagelens.api.routes.common import Asks
from pagelens.errors import PagelensError

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15.0  # a comment line while the model is silent keeps idle proxies from closing the stream
router = APIRouter(prefix="/collections", tags=["answers"], responses=error_responses())

ASK_STREAM = {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "With `stream: true`: `sources` ({sources}), `token` ({text}) per piece of the answer, then "
    "`done` ({timings, usage, model, cached, finish_reason}) or `error` ({error: {type, message}}); then it ends",
}


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post(
    "/{name}/ask",
    response_model=None,
    responses={
        200: {"model": AskResponse, **ASK_STREAM},
        **error_responses(400, 404, 409, *BODY_ERRORS, 422, 429, 501, 502, 503, 504),
    },
)
async def ask(name: str, body: AskRequest, request: Request, asks: Asks):
    """Answer `question` from the `k` pages `/search` finds for it (the same `mode`, `prefetch` and
    `filter`), sent to the answer model as images (or text layers with `--llm-images off`) numbered
    [1]..[k]; the answer cites them, and `sources` lists them in that order. 501 when no answer model
    is configured; 502 when it is unreachable or answers an error; 504 when it is silent for
    PAGELENS_LLM_TIMEOUT. With `stream`, those come as an `error` event; a client that disconnects
    stops the generation."""
    asking = await asks.open(
        name, body.question, k=body.k, mode=body.mode, prefetch=body.prefetch, filter=body.filter,
        max_tokens=body.max_tokens,
    )  # fmt: skip
    request.state.timings = asking.timings  # the access log's stages
    metrics = request.app.state.metrics
    if not body.stream:
        answering = asyncio.ensure_future(asking.answer())
        left = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({answering, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client left, or this request was cancelled: stop the generation (closed upstream)
            left.cancel()
            if not answering.done():
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering
        if answering.cancelled():
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        answer = answering.result()
        metrics.on_ask(asking.timings.as_dict(), cached=asking.cached)
        return answer

    async def events() -> AsyncIterator[str]:
        yield sse("sources", {"sources": asking.sources})
        try:
            async for item in _with_heartbeats(asking.events(), HEARTBEAT_SECONDS):
                yield item if isinstance(item, str) else sse(*item)
        except PagelensError as error:
            metrics.on_error(error.error_type)
            yield sse("error", {"error": error.to_dict()})
            return
        except Exception:  # a bug: the client still gets an ending it can read
            log.exception("an ask's stream failed")
            internal = PagelensError("internal server error")
            metrics.on_error(internal.error_type)
            yield sse("error", {"error": internal.to_dict()})
            return
        metrics.on_ask(asking.timings.as_dict(), cached=asking.cached)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (polled)."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)


async def _with_heartbeats(events: AsyncIterator[Any], every: float) -> AsyncIterator[Any]:
    """`events`' items, and the SSE comment `: waiting` whenever none has come for `every` seconds.
    Stopping early (the client left) cancels the pending item and closes `events`."""
    pending: asyncio.Future | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(events))
            while not (await asyncio.wait({pending}, timeout=every))[0]:
                yield ": waiting\n\n"
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()  # type: ignore[attr-defined]
