"""The ask service: a question over a collection's pages, answered by the runtime's generator.

    asking = await asks.open("reports", "What was the revenue?", k=3)   # 4xx/501 raised here
    asking.sources                          # [{document_id, page, score, name, metadata}], best first
    async for kind, data in asking.events():   # ("token", {"text"}) ..., then ("done", {...})
        ...
    body = await asking.answer()            # or all at once: {answer, sources, model, usage, timings, cached}

`open` checks the input, then retrieves exactly as `/collections/{c}/search` does (the collection
service's `search` with the same k, mode, prefetch and filter), reads the pages (JPEG images of at
most PAGELENS_LLM_MAX_PIXELS, or their text layers with `--llm-images off`) and builds the prompt
(rag/prompt.py). Everything that can be refused is refused there, before a response starts; what
the generator does wrong later (502, 504) comes out of `events`/`answer`. A generator that sends
nothing for PAGELENS_LLM_TIMEOUT seconds is stopped with `GeneratorTimeout`, whatever kind it is.

An identical ask of an unchanged collection (rag/cache.py: the collection's generation is in the
key) is answered from the cache, `cached: true`, without embedding, search or generation; its
events are the stored pieces. Stopping the iteration of `events` (a client that left) closes the
generator's stream, which stops the generation upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagelens.errors import GeneratorNotConfigured, GeneratorTimeout, InvalidInput
from pagelens.rag.cache import AnswerCache, CachedAnswer, answer_key
from pagelens.rag.factory import HOW_TO_CONFIGURE
from pagelens.rag.generator import Finished, Generator, TextDelta, Usage
from pagelens.rag.prompt import PromptPage, build_messages, check_text_layers, jpeg_data_uri

if TYPE_CHECKING:
    from pagelens.service.collections import CollectionService, SearchHit
    from pagelens.settings import Settings

DEFAULT_K, MAX_K = 3, 20
DEFAULT_MAX_TOKENS, MAX_TOKENS = 512, 8192
MODES = ("exact", "fast")
STAGES = ("embed", "search", "images", "ttft", "generate", "total")


@dataclass
class AskTimings:
    """Seconds per stage of one ask; `as_dict` is what the access log prints (as `<stage>_ms`)."""

    embed: float = 0.0
    search: float = 0.0
    images: float = 0.0
    ttft: float = 0.0
    generate: float = 0.0
    total: float = 0.0
    items: int = 0  # pages in the prompt (the access log's `items`)

    def as_dict(self) -> dict[str, float]:
        return {stage: getattr(self, stage) for stage in STAGES}

    def milliseconds(self) -> dict[str, float]:
        """`{"embed_ms", "search_ms", "images_ms", "ttft_ms", "generate_ms", "total_ms"}`, rounded to 0.01 ms."""
        return {f"{stage}_ms": round(seconds * 1000, 2) for stage, seconds in self.as_dict().items()}


def check_answer_settings(settings: Settings) -> None:
    """`GeneratorNotConfigured` naming the flags when the settings describe no answer model (checked
    before anything loads)."""
    if not (settings.llm_url or settings.llm_model):
        raise GeneratorNotConfigured(HOW_TO_CONFIGURE)


def check_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str):
        raise InvalidInput(f"question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise InvalidInput("question is empty")
    if len(question) > max_chars:
        raise InvalidInput(f"question has {len(question):,} characters, over the limit of {max_chars:,}")
    return question


def check_range(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def source_of(hit: SearchHit) -> dict[str, Any]:
    return {"document_id": hit.document_id, "page": hit.page, "score": hit.score, "name": hit.name,
            "metadata": hit.metadata}  # fmt: skip


class Asking:
    """One ask under way: its `sources` now, its answer from `events` or `answer` (once)."""

    def __init__(
        self,
        service: AskService,
        *,
        sources: list[dict[str, Any]],
        timings: AskTimings,
        started: float,
        key: dict[str, Any],
        generator: Generator,
        messages: list[dict[str, Any]] | None = None,
        cached: CachedAnswer | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self._service, self.sources, self.timings, self._started, self._key = service, sources, timings, started, key
        self._generator, self._messages, self._cached, self._max_tokens = generator, messages, cached, max_tokens
        self.cached = cached is not None
        self.model = cached.model if cached is not None else generator.model
        self.usage = cached.usage if cached is not None else Usage()
        self.finish_reason = cached.finish_reason if cached is not None else "stop"

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """`("token", {"text"})` per piece of the answer, then `("done", {timings, usage, model,
        cached, finish_reason})`. Generator failures are raised (GeneratorFailed, GeneratorTimeout, ...)."""
        if self._cached is not None:
            for piece in self._cached.pieces:
                yield "token", {"text": piece}
        else:
            pieces: list[str] = []
            async with aclosing(self._generate()) as generated:  # closed too when our reader stops early
                async for piece in generated:
                    pieces.append(piece)
                    yield "token", {"text": piece}
            answer = CachedAnswer(tuple(pieces), tuple(self.sources), self.model, self.usage, self.finish_reason)
            # under the model that answered (a server's model is known once it has answered once)
            self._service.cache.put(answer_key(**{**self._key, "model": self._generator.model}), answer)
        self.timings.total = time.perf_counter() - self._started
        yield "done", self.done()

    def done(self) -> dict[str, Any]:
        usage = {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens}
        return {"timings": self.timings.milliseconds(), "usage": usage, "model": self.model, "cached": self.cached,
                "finish_reason": self.finish_reason}  # fmt: skip

    async def _generate(self) -> AsyncIterator[str]:
        """The generator's pieces (none for no pages), each awaited at most PAGELENS_LLM_TIMEOUT seconds."""
        if self._messages is None:  # nothing retrieved: nothing to ask the model about
            yield self._service.nothing_found
            return
        timeout = self._service.settings.llm_timeout
        started = time.perf_counter()
        stream = self._generator.stream(self._messages, max_tokens=self._max_tokens)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(stream), timeout)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise GeneratorTimeout(
                        f"the answer model ({self.model or 'unnamed'}) sent nothing for {timeout:g} s "
                        "(PAGELENS_LLM_TIMEOUT)"
                    ) from None
                if isinstance(event, TextDelta):
                    if not self.timings.ttft:
                        self.timings.ttft = time.perf_counter() - started
                    yield event.text
                elif isinstance(event, Finished):
                    self.usage, self.finish_reason = event.usage, event.finish_reason
        finally:
            self.timings.generate = time.perf_counter() - started
            self.model = self._generator.model or self.model  # a server's model is known once it answered
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()  # a reader that stopped early stops the generation upstream

    async def answer(self) -> dict[str, Any]:
        """The whole response: `{answer, sources, model, usage, timings, cached, finish_reason}`."""
        pieces, done = [], {}
        async for kind, data in self.events():
            if kind == "token":
                pieces.append(data["text"])
            else:
                done = data
        return {"answer": "".join(pieces), "sources": self.sources, **done}


class AskService:
    """Questions over the collections of `collections`, answered by `generator()` (None: not configured)."""

    nothing_found = "No page of the collection matches the question (it is empty, or the filter excludes every page)."

    def __init__(
        self, settings: Settings, collections: CollectionService, generator: Callable[[], Generator | None]
    ) -> None:
        self.settings = settings
        self.collections = collections
        self._generator = generator
        self.cache = AnswerCache(settings.answer_cache_size, settings.answer_cache_ttl_seconds)

    def generator(self) -> Generator:
        """The answer model; `GeneratorNotConfigured` (501) naming the flags that set one."""
        generator = self._generator()
        if generator is None:
            raise GeneratorNotConfigured(HOW_TO_CONFIGURE)
        return generator

    def sends_images(self, generator: Generator) -> bool:
        return self.settings.llm_images == "on" and generator.accepts_images

    async def open(
        self,
        name: str,
        question: str,
        *,
        k: int = DEFAULT_K,
        mode: str = "exact",
        prefetch: int | None = None,
        filter: dict[str, Any] | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> Asking:
        """Check, retrieve, read the pages and build the prompt (or find the answer cached)."""
        started = time.perf_counter()
        check_question(question, self.settings.max_query_chars)
        check_range("k", k, 1, MAX_K)
        check_range("max_tokens", max_tokens, 1, MAX_TOKENS)
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        generator = self.generator()
        images = self.sends_images(generator)
        key = {
            "collection": name, "generation": self.collections.generation(name), "question": question, "k": k,
            "mode": mode, "prefetch": prefetch, "filter": filter, "model": generator.model, "max_tokens": max_tokens,
            "images": images,
        }  # fmt: skip
        timings = AskTimings()
        common = {"timings": timings, "started": started, "key": key, "generator": generator, "max_tokens": max_tokens}
        cached = self.cache.get(answer_key(**key))
        if cached is not None:
            return Asking(self, sources=list(cached.sources), cached=cached, **common)
        stages: dict[str, float] = {}
        hits = await self.collections.search(name, question, k=k, mode=mode, prefetch=prefetch, filter=filter,
                                             stages=stages)  # fmt: skip
        timings.embed, timings.search = stages.get("embed", 0.0), stages.get("search", 0.0)
        read_started = time.perf_counter()
        pages = await asyncio.gather(*(self._page(name, number, hit, images) for number, hit in enumerate(hits, 1)))
        timings.images, timings.items = time.perf_counter() - read_started, len(pages)
        if not images:
            check_text_layers(pages)
        messages = build_messages(question, pages, images=images) if pages else None
        return Asking(self, sources=[source_of(hit) for hit in hits], messages=messages, **common)

    async def _page(self, name: str, number: int, hit: SearchHit, images: bool) -> PromptPage:
        if not images:
            text = await self.collections.page_text(name, hit.document_id, hit.page)
            return PromptPage(number, hit.name, hit.page, text=text)
        max_pixels = self.settings.llm_max_pixels
        image = await self.collections.page_image(name, hit.document_id, hit.page, max_pixels=max_pixels)
        uri = await asyncio.to_thread(jpeg_data_uri, image, max_pixels)
        return PromptPage(number, hit.name, hit.page, image=uri)

    async def ask(self, name: str, question: str, **options: Any) -> dict[str, Any]:
        """`open` then `answer`: the whole response at once."""
        return await (await self.open(name, question, **options)).answer()
