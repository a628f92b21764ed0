"""The ask service with in-process generators (no HTTP model server): one that hangs after its
first piece, one that fails mid-answer. The service's own time limit stops any generator, the
stopped generator is closed, and a server keeps embedding and searching meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from pagelens.api import create_app
from pagelens.engine import EngineConfig
from pagelens.errors import GeneratorFailed, GeneratorTimeout
from pagelens.rag.generator import ChatMessage, Finished, GenerationEvent, TextDelta, Usage
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from pagelens.testing.servers import uvicorn_in_thread
from tests.index.test_pdf import make_pdf


class InProcess:
    """A generator in this process: `first` pieces, then it hangs (`fail`: raises GeneratorFailed)."""

    model = "in-process"
    accepts_images = True

    def __init__(self, first: Sequence[str], *, fail: bool = False) -> None:
        self.first, self.fail = list(first), fail
        self.closed_streams = 0
        self.received: list[list[ChatMessage]] = []

    async def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> AsyncIterator[GenerationEvent]:
        self.received.append(list(messages))
        try:
            for piece in self.first:
                yield TextDelta(piece)
            if self.fail:
                raise GeneratorFailed("the in-process model ran out of memory")
            await asyncio.Event().wait()  # hangs
            yield Finished(Usage())
        finally:
            self.closed_streams += 1

    async def aclose(self) -> None:
        pass


def runtime_with(generator, tmp_path, **settings) -> Runtime:
    settings = Settings(model="fake", no_auth=True, data_dir=str(tmp_path / "data"), pdf_dpi=72, **settings)
    runtime = Runtime(settings, generator=generator)
    return runtime.start(FakeBackend(dim=128), engine_config=EngineConfig(max_wait_ms=1))


async def fill(runtime: Runtime) -> None:
    await runtime.collections.create("docs")
    await runtime.collections.add_document("docs", make_pdf(3), filename="r.pdf", metadata={})


def test_a_hanging_generator_is_stopped_by_the_service_and_closed(tmp_path):
    generator = InProcess(["It ", "was "])
    runtime = runtime_with(generator, tmp_path, llm_timeout=0.4)

    async def scenario():
        await fill(runtime)
        asking = await runtime.asks.open("docs", "what?", k=2)
        seen = []
        started = time.monotonic()
        with pytest.raises(GeneratorTimeout, match=r"0\.4 s"):
            async for event, data in asking.events():
                seen.append((event, data))
        return seen, time.monotonic() - started

    try:
        seen, elapsed = asyncio.run(scenario())
    finally:
        runtime.close()
    assert seen == [("token", {"text": "It "}), ("token", {"text": "was "})] and 0.4 <= elapsed < 3
    assert generator.closed_streams == 1
    assert len([p for p in generator.received[0][1]["content"] if p["type"] == "image_url"]) == 2


def test_a_generator_failing_mid_answer_ends_the_stream_with_an_error_event_and_search_keeps_working(tmp_path):
    hanging = InProcess(["Half "])
    runtime = runtime_with(hanging, tmp_path, llm_timeout=30)
    asyncio.run(fill(runtime))
    try:
        with uvicorn_in_thread(create_app(runtime=runtime)) as url, httpx.Client(base_url=url, timeout=60) as http:
            with http.stream("POST", "/collections/docs/ask", json={"question": "what?", "stream": True}) as stream:
                lines = stream.iter_lines()
                assert next(lines) == "event: sources"
                # the ask hangs after its first piece: the rest of the server does not
                for _ in range(3):
                    began = time.monotonic()
                    assert http.post("/collections/docs/search", json={"query": "what?", "k": 1}).status_code == 200
                    assert http.post("/embed", json={"texts": ["what?"]}).status_code == 200
                    assert http.get("/health").status_code == 200 and time.monotonic() - began < 2
            deadline = time.monotonic() + 5
            while hanging.closed_streams == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hanging.closed_streams == 1  # the client left: the generation was stopped
            runtime.generator = InProcess(["Half ", "an "], fail=True)
            events = []
            with http.stream("POST", "/collections/docs/ask", json={"question": "why?", "stream": True}) as stream:
                event = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
            assert [e for e, _ in events] == ["sources", "token", "token", "error"]
            assert events[-1][1] == {
                "error": {"type": "llm_error", "message": "the in-process model ran out of memory"}
            }
            response = http.post("/collections/docs/ask", json={"question": "why?"})
            assert response.status_code == 502 and response.json()["error"]["type"] == "llm_error"
    finally:
        runtime.close()


def test_single_vector_collections_answer_from_text_layers_and_scans_without_text_are_a_422(tmp_path):
    from pagelens.errors import UnprocessableDocument
    from tests.conftest import encode, make_page
    from tests.rag.documents import text_pdf

    generator = InProcess([])

    async def finish_after_first(messages, *, max_tokens):  # answers, then finishes
        generator.received.append(list(messages))
        yield TextDelta("Forty-two [1].")
        yield Finished(Usage(10, 3))

    generator.stream = finish_after_first
    settings = Settings(model="fake", no_auth=True, data_dir=str(tmp_path / "data"), pdf_dpi=72, llm_images="off")
    runtime = Runtime(settings, generator=generator)
    runtime.start(FakeBackend(dim=64, multi_vector=False), engine_config=EngineConfig(max_wait_ms=1))

    async def scenario():
        service = runtime.collections
        await service.create("bi")
        await service.add_document("bi", text_pdf(["Revenue 42 M", "Costs 3 M"]), filename="r.pdf", metadata={})
        answer = await runtime.asks.ask("bi", "revenue?", k=2)
        await service.create("scans")
        await service.add_document("scans", encode(make_page(200, 300, 1)), filename="s.png", metadata={})
        with pytest.raises(UnprocessableDocument, match="has a text layer"):
            await runtime.asks.open("scans", "revenue?", k=1)
        return answer

    try:
        answer = asyncio.run(scenario())
    finally:
        runtime.close()
    assert answer["answer"] == "Forty-two [1]." and answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 3}
    assert len(answer["sources"]) == 2 and {s["page"] for s in answer["sources"]} == {1, 2}
    prompt = generator.received[0][1]["content"]
    assert "Revenue 42 M" in prompt and "Costs 3 M" in prompt and "revenue?" in prompt


def test_a_generator_bug_mid_stream_ends_the_stream_with_an_internal_error_event(tmp_path):
    class Broken(InProcess):
        async def stream(self, messages, *, max_tokens):
            yield TextDelta("So ")
            raise RuntimeError("a bug")

    runtime = runtime_with(Broken([]), tmp_path)
    asyncio.run(fill(runtime))
    try:
        with uvicorn_in_thread(create_app(runtime=runtime)) as url, httpx.Client(base_url=url, timeout=60) as http:
            with http.stream("POST", "/collections/docs/ask", json={"question": "what?", "stream": True}) as stream:
                body = "".join(stream.iter_text())
            assert body.index("event: sources") < body.index("event: token") < body.index("event: error")
            assert '{"error": {"type": "internal_error", "message": "internal server error"}}' in body
            assert "a bug" not in body
            assert http.post("/collections/docs/search", json={"query": "what?"}).status_code == 200
    finally:
        runtime.close()
