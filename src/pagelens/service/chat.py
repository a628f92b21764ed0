"""Chat completions over the runtime's answer model (the `Generator` of pagelens.rag), for the
OpenAI-compatible `/v1/chat/completions`.

    model, events = open_chat(runtime, messages, model=None, max_tokens=512)
    first = await unless_client_leaves(anext(events), client_gone)   # None once the client left
    text, finished = await unless_client_leaves(collect_answer(first, events), client_gone)

The model-name policy is vLLM's: `model` may be omitted (the served model answers), and a name that
is not the served model's is a 404 naming both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pagelens.errors import GeneratorNotConfigured, NotFound
from pagelens.rag.generator import ChatMessage, Finished, GenerationEvent, TextDelta, Usage

if TYPE_CHECKING:
    from pagelens.service.runtime import Runtime

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Finished",
    "TextDelta",
    "Usage",
    "collect_answer",
    "open_chat",
    "unless_client_leaves",
]

T = TypeVar("T")

DEFAULT_MAX_TOKENS = 512  # when the request names none (an OpenAI client often does not)
DISCONNECT_POLL_SECONDS = 0.25
NOT_CONFIGURED = (
    "no answer model is configured: start pagelens with --llm-model MODEL (a vision-language model run in this "
    "process, e.g. Qwen/Qwen2.5-VL-3B-Instruct) or --llm-url URL (an OpenAI-compatible server such as vLLM), "
    "or set PAGELENS_LLM_MODEL / PAGELENS_LLM_URL"
)


def open_chat(
    runtime: Runtime, messages: Sequence[ChatMessage], *, model: str | None, max_tokens: int
) -> tuple[str, AsyncIterator[GenerationEvent]]:
    """The served model's name and its event stream for `messages`. `GeneratorNotConfigured` (501)
    without an answer model; `NotFound` (404) when `model` names another one (a remote generator
    configured with no model name takes any). Nothing runs until the stream is iterated; close it
    (`aclose`) to stop the generation."""
    generator = runtime.generator
    if generator is None:
        raise GeneratorNotConfigured(NOT_CONFIGURED)
    served = generator.model
    if model is not None and served and model != served:
        raise NotFound(f"model: {model!r} is not served here; the answer model is {served!r} (or omit model)")
    return served or model or "", generator.stream(messages, max_tokens=max_tokens)


async def unless_client_leaves(work: Awaitable[T], client_gone: Callable[[], Awaitable[bool]]) -> T | None:
    """`work`'s result, or None when `client_gone()` turns true first (polled every 0.25 s while it
    runs); `work` is then cancelled: awaiting a generator's stream, that stops the generation. Its
    errors propagate."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await client_gone():
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def collect_answer(first: GenerationEvent, events: AsyncIterator[GenerationEvent]) -> tuple[str, Finished]:
    """The whole answer's text, from the stream's `first` event on, and its `Finished`."""
    texts, event = [], first
    while not isinstance(event, Finished):
        texts.append(event.text)
        event = await anext(events)
    return "".join(texts), event
