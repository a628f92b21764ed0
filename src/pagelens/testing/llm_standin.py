"""A stand-in OpenAI-compatible answer server for tests and `pagelens bench ask`: real HTTP on
loopback (uvicorn in a thread), a fixed answer streamed at a fixed token rate.

    with StandInLLM(answer="Revenue was 42 M [1].", tokens_per_second=200).running() as url:
        ...                                   # url: "http://127.0.0.1:PORT/v1", for --llm-url
        standin.requests[-1]                  # the JSON bodies it received, in order (and .headers)
        standin.fail(503, "overloaded")       # answer every request with that status and message
        standin.hang()                        # answer nothing (until the client leaves)
        standin.behave()                      # back to answering
        standin.streams_cut                   # streams whose client left before the end

It serves `POST /v1/chat/completions` (streamed or not; `max_tokens` honoured, finish reason
"length" then; usage when `stream_options.include_usage`) and `GET /v1/models`. The answer is cut
into tokens of one word each, with the whitespace before it (`tokens(answer)`); a streamed answer
sends one every `1 / tokens_per_second` seconds after `first_token_seconds`. `answer` may be a
function of the request body. A server that is down: `unreachable_url()`, where nothing listens.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pagelens.testing.servers import free_port, uvicorn_in_thread

Answer = str | Callable[[dict[str, Any]], str]
IMAGE_TOKENS = 64  # prompt tokens an image counts as in the usage it reports


def tokens(text: str) -> list[str]:
    """`text` cut as the stand-in streams it: each word with the whitespace before it (joined: `text`)."""
    return re.findall(r"\s*\S+|\s+$", text)


def unreachable_url() -> str:
    """A base URL on loopback where no server listens (a generator that is down)."""
    return f"http://127.0.0.1:{free_port()}/v1"


def image_urls(body: dict[str, Any]) -> list[str]:
    """The `image_url` URLs of a chat request, in order."""
    return [part["image_url"]["url"] for part in _parts(body) if part.get("type") == "image_url"]


def texts(body: dict[str, Any]) -> list[str]:
    """The text of a chat request's messages and text parts, in order."""
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            found.append(content)
    return found + [part["text"] for part in _parts(body) if part.get("type") == "text"]


def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [part for m in body.get("messages", []) if isinstance(m.get("content"), list) for part in m["content"]]


class StandInLLM:
    """An OpenAI-compatible server answering `answer` at `tokens_per_second`; records what it receives."""

    def __init__(
        self,
        answer: Answer = "The pages say so [1].",
        *,
        tokens_per_second: float = 500.0,
        first_token_seconds: float = 0.0,
        model: str = "standin-vlm",
    ) -> None:
        self.answer = answer
        self.tokens_per_second = tokens_per_second
        self.first_token_seconds = first_token_seconds
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.streams_started = self.streams_finished = self.streams_cut = 0
        self.stream_cut = threading.Event()  # set when a client leaves a stream early
        self._failure: tuple[int, str] | None = None
        self._hanging = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ behaviour
    def fail(self, status: int, message: str = "the stand-in was told to fail") -> None:
        self._failure, self._hanging = (status, message), False

    def hang(self) -> None:
        self._failure, self._hanging = None, True

    def behave(self) -> None:
        self._failure, self._hanging = None, False

    def answer_for(self, body: dict[str, Any]) -> str:
        return self.answer(body) if callable(self.answer) else self.answer

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port; yield the base URL (`.../v1`); stop afterwards."""
        with uvicorn_in_thread(self.app(), timeout_graceful_shutdown=1) as url:
            yield f"{url}/v1"

    # ------------------------------------------------------------------ the app
    def app(self):
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def models(_request: Request) -> JSONResponse:
            entry = {"id": self.model, "object": "model", "created": 0, "owned_by": "pagelens-standin"}
            return JSONResponse({"object": "list", "data": [entry]})

        async def completions(request: Request):
            body = await request.json()
            with self._lock:
                self.requests.append(body)
                self.headers.append(dict(request.headers))
            if self._hanging:
                while not await request.is_disconnected():
                    await asyncio.sleep(0.05)
                return JSONResponse({}, status_code=499)
            if self._failure is not None:
                status, message = self._failure
                error = {"message": message, "type": "standin_error", "code": status}
                return JSONResponse({"error": error}, status_code=status)
            pieces = tokens(self.answer_for(body))
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
            reason = "stop"
            if limit is not None and len(pieces) > limit:
                pieces, reason = pieces[:limit], "length"
            usage = {"prompt_tokens": self._prompt_tokens(body), "completion_tokens": len(pieces)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if not body.get("stream"):
                message = {"role": "assistant", "content": "".join(pieces)}
                choice = {"index": 0, "message": message, "finish_reason": reason}
                return JSONResponse({**self._envelope("chat.completion"), "choices": [choice], "usage": usage})
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._chunks(pieces, reason, usage if with_usage else None),
                                     media_type="text/event-stream")  # fmt: skip

        return Starlette(routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ])  # fmt: skip

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": "chatcmpl-standin", "object": kind, "created": int(time.time()), "model": self.model}

    async def _chunks(self, pieces: list[str], reason: str, usage: dict | None) -> AsyncIterator[str]:
        with self._lock:
            self.streams_started += 1
        finished = False
        try:
            await asyncio.sleep(self.first_token_seconds)
            for number, piece in enumerate(pieces):
                if number:
                    await asyncio.sleep(1 / self.tokens_per_second)
                delta = {"role": "assistant", "content": piece} if number == 0 else {"content": piece}
                yield self._event([{"index": 0, "delta": delta, "finish_reason": None}])
            yield self._event([{"index": 0, "delta": {}, "finish_reason": reason}])
            if usage is not None:
                yield self._event([], usage=usage)
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            with self._lock:
                if finished:
                    self.streams_finished += 1
                else:
                    self.streams_cut += 1
                    self.stream_cut.set()

    def _event(self, choices: list[dict[str, Any]], usage: dict | None = None) -> str:
        chunk: dict[str, Any] = {**self._envelope("chat.completion.chunk"), "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n"

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        return sum(len(text.split()) for text in texts(body)) + IMAGE_TOKENS * len(image_urls(body))
