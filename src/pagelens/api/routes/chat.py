"""`POST /v1/chat/completions` (OpenAI-compatible, streaming or not) and `GET /v1/models`, over the
runtime's answer model: the in-process VLM (`--llm-model`) or the OpenAI-compatible server behind
`--llm-url`. The official `openai` client works against these routes.

A client that disconnects stops the generation: the stream's body iterator closes the model's event
stream, and while no byte has been sent yet (waiting for the first token, or a non-streamed answer)
the route polls for the disconnect itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from pagelens.api.chat_protocol import ChatCompletionRequest, ChatCompletionResponse, ModelList
from pagelens.api.openapi import BODY_ERRORS, error_responses
from pagelens.api.routes.common import get_runtime
from pagelens.errors import PagelensError
from pagelens.service import DEFAULT_MAX_TOKENS, Finished, collect_answer, open_chat, unless_client_leaves

router = APIRouter(tags=["chat"], responses=error_responses(400, 404, *BODY_ERRORS, 501, 502, 503, 504))

CLIENT_CLOSED = 499  # nginx's status for a request whose client went away; never seen by the client
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _finish_reason(event: Finished) -> str:
    return event.finish_reason if event.finish_reason in ("stop", "length") else "stop"


def _usage(event: Finished) -> dict[str, int]:
    prompt, completion = event.usage.prompt_tokens, event.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletionResponse,
            "description": "The answer; with `stream: true`, server-sent events `data: <chat.completion.chunk>` "
            "(api/chat_protocol.py ChatCompletionChunk), then `data: [DONE]`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    """The answer model's reply to `messages` (text and `image_url` data-URI parts)."""
    messages = [message.model_dump(exclude_none=True) for message in body.messages]
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    model, events = open_chat(get_runtime(request), messages, model=body.model, max_tokens=max_tokens)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    try:  # the first event before any byte: a bad input is still an HTTP error status
        first = await unless_client_leaves(anext(events), request.is_disconnected)
    except BaseException:
        await events.aclose()
        raise
    if first is None:
        await events.aclose()
        return Response(status_code=CLIENT_CLOSED)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _sse(first, events, head={"id": completion_id, "created": created, "model": model},
                      include_usage=include_usage)  # fmt: skip
        return StreamingResponse(chunks, media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        answer = await unless_client_leaves(collect_answer(first, events), request.is_disconnected)
    finally:
        await events.aclose()
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    text, event = answer
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(event),
            }
        ],
        "usage": _usage(event),
    }


def _data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _sse(first, events: AsyncIterator, *, head: dict, include_usage: bool) -> AsyncIterator[bytes]:
    """The chunks: the role, one per text delta, the finish reason, the usage (when asked), `[DONE]`.
    An error after the first byte becomes a `data: {"error": ...}` event before `[DONE]`."""
    head = {**head, "object": "chat.completion.chunk"}
    usage_field = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _data({**head, "choices": [choice], **usage_field})

    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while not isinstance(event, Finished):
            yield chunk({"content": event.text})
            event = await anext(events)
        yield chunk({}, _finish_reason(event))
        if include_usage:
            yield _data({**head, "choices": [], "usage": _usage(event)})
    except PagelensError as error:
        yield _data({"error": error.to_dict()})
    finally:
        await events.aclose()  # a client gone mid-stream closes this iterator: the generation stops
    yield b"data: [DONE]\n\n"


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request):
    """The answer model `/v1/chat/completions` serves (an empty list when none is configured, or a
    remote one configured with no model name)."""
    generator = get_runtime(request).generator
    name = generator.model if generator is not None else None
    card = {"id": name, "object": "model", "created": 0, "owned_by": "pagelens"}
    return {"object": "list", "data": [card] if name else []}
