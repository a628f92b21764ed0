"""A `Generator` over any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp's
server, TGI, OpenAI), through the official `openai` package, streaming.

    generator = OpenAIGenerator("http://127.0.0.1:8001/v1", model="Qwen/Qwen2.5-VL-3B-Instruct")
    async for event in generator.stream(messages, max_tokens=512):   # TextDelta ..., Finished
        ...
    await generator.aclose()

Failures become the typed errors of the generator contract: unreachable -> `GeneratorUnavailable`
naming the URL (its user and password taken out; never the key); an error status, or an error
sent inside the stream -> `GeneratorFailed` with the status and the server's message; no first
byte, or no next piece, within `timeout` seconds -> `GeneratorTimeout`. Nothing is retried: a
retry would multiply the time a client waits. Closing the stream (`aclose`, or cancelling the
task reading it) closes the HTTP response, so the server sees the disconnect and stops decoding.

Without `model`, the server's first listed model (`GET {url}/models`) is used, found on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pagelens.errors import GeneratorFailed, GeneratorTimeout, GeneratorUnavailable
from pagelens.rag.generator import ChatMessage, Finished, GenerationEvent, TextDelta, Usage

if TYPE_CHECKING:
    from openai import AsyncOpenAI

NO_KEY = "none"  # sent when no key is set: the package would otherwise read OPENAI_API_KEY and send it anywhere


def public_url(url: str) -> str:
    """`url` without any `user:password@` part, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class OpenAIGenerator:
    """Chat completions from the server at `base_url` (e.g. `http://127.0.0.1:8001/v1`)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        accepts_images: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = public_url(self.base_url)
        self._model = model
        self._api_key = api_key
        self.timeout = timeout
        self._accepts_images = accepts_images
        # one client per event loop: an HTTP connection belongs to the loop that opened it (the
        # embedded CLI runs each command in a loop of its own)
        self._clients: dict[asyncio.AbstractEventLoop, AsyncOpenAI] = {}

    @property
    def model(self) -> str:
        return self._model or ""

    @property
    def accepts_images(self) -> bool:
        return self._accepts_images

    def _client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        for other in [other for other in self._clients if other.is_closed()]:
            del self._clients[other]  # its connections went with it
        if loop not in self._clients:
            self._clients[loop] = AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key or NO_KEY, timeout=self.timeout, max_retries=0
            )
        return self._clients[loop]

    async def _resolve_model(self, client: AsyncOpenAI) -> str:
        if self._model:
            return self._model
        with self._translated():
            page = await client.models.list()
        models = [entry.id for entry in page.data]
        if not models:
            raise GeneratorFailed(f"the answer model's server at {self.url} lists no models; set --llm-model")
        self._model = models[0]
        return self._model

    async def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> AsyncIterator[GenerationEvent]:
        """`TextDelta`s as the server streams them, then one `Finished` with its usage."""
        client = self._client()
        model = await self._resolve_model(client)
        with self._translated():
            response = await client.chat.completions.create(
                model=model, messages=list(messages), max_tokens=max_tokens, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )  # fmt: skip
        usage, reason = Usage(), "stop"
        try:
            with self._translated():
                async for chunk in response:
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices:
                        if choice.finish_reason:
                            reason = choice.finish_reason
                        text = choice.delta.content if choice.delta is not None else None
                        if text:
                            yield TextDelta(text)
        finally:
            await response.close()  # the server sees the disconnect when the reader stops early
        yield Finished(usage, reason)

    def _translated(self) -> _Translate:
        return _Translate(self.url, self.timeout)

    async def aclose(self) -> None:
        """Close the client of this event loop; those of other loops are dropped (their loops own them)."""
        clients, self._clients = self._clients, {}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = clients.get(loop)
        if client is not None:
            await client.close()


class _Translate:
    """A context manager turning the `openai` package's errors into the generator contract's."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        if error is None:
            return
        import openai

        if isinstance(error, openai.APITimeoutError):
            raise GeneratorTimeout(
                f"the answer model at {self.url} sent nothing for {self.timeout:g} s (PAGELENS_LLM_TIMEOUT)"
            ) from None
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error.__context__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
            raise GeneratorUnavailable(f"cannot reach the answer model's server at {self.url} ({reason})") from None
        if isinstance(error, openai.APIStatusError):
            hint = ""
            if error.status_code == 404 and not self.url.rstrip("/").endswith("/v1"):
                hint = " (OpenAI-compatible servers serve under /v1: should --llm-url end with /v1?)"
            raise GeneratorFailed(
                f"the answer model's server at {self.url} answered {error.status_code}: {_message(error)}{hint}"
            ) from None
        if isinstance(error, openai.APIError):  # an error sent inside the stream
            raise GeneratorFailed(
                f"the answer model's server at {self.url} failed mid-answer: {error.message}"
            ) from None


def _message(error: Any) -> str:
    """The server's own message from an error body (`{"error": {"message"}}`, `{"message"}`, or text)."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
    text = getattr(error.response, "text", "") or error.message
    return text[:500]
