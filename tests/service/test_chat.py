"""service/chat.py: the model-name policy over the runtime's answer model, and giving up on work
when the client leaves."""

from __future__ import annotations

import asyncio

import pytest

from pagelens.errors import GeneratorNotConfigured, NotFound
from pagelens.rag.generator import Finished, TextDelta, Usage
from pagelens.service import Runtime, collect_answer, open_chat, unless_client_leaves
from pagelens.settings import Settings

QUESTION = [{"role": "user", "content": "Why?"}]


class Scripted:
    """A generator answering `words` one event each; it records whether its stream was closed early."""

    accepts_images = True

    def __init__(self, model: str, words: list[str]) -> None:
        self.model = model
        self.words = words
        self.closed_early = False

    async def stream(self, messages, *, max_tokens):
        try:
            for word in self.words:
                await asyncio.sleep(0.01)
                yield TextDelta(word)
        except (GeneratorExit, asyncio.CancelledError):
            self.closed_early = True
            raise
        yield Finished(Usage(3, len(self.words)), "stop")

    async def aclose(self):
        pass


def runtime_with(generator) -> Runtime:
    runtime = Runtime(Settings(model="fake/model"))
    runtime.generator = generator
    return runtime


def test_no_answer_model_is_501_naming_the_flags():
    with pytest.raises(GeneratorNotConfigured) as raised:
        open_chat(runtime_with(None), QUESTION, model=None, max_tokens=8)
    assert raised.value.http_status == 501
    assert "--llm-model" in raised.value.message and "--llm-url" in raised.value.message


def test_the_model_name_is_omitted_or_the_served_one():
    runtime = runtime_with(Scripted("vlm-a", ["a"]))
    assert open_chat(runtime, QUESTION, model=None, max_tokens=8)[0] == "vlm-a"
    assert open_chat(runtime, QUESTION, model="vlm-a", max_tokens=8)[0] == "vlm-a"
    with pytest.raises(NotFound, match="'vlm-b' is not served here; the answer model is 'vlm-a'"):
        open_chat(runtime, QUESTION, model="vlm-b", max_tokens=8)


def test_a_generator_with_no_model_name_takes_any():
    runtime = runtime_with(Scripted("", ["a"]))  # a remote server configured without --llm-model
    assert open_chat(runtime, QUESTION, model="whatever", max_tokens=8)[0] == "whatever"


def test_the_whole_answer_when_the_client_stays():
    generator = Scripted("m", ["Hello", " world"])

    async def scenario():
        _, events = open_chat(runtime_with(generator), QUESTION, model=None, max_tokens=8)
        first = await unless_client_leaves(anext(events), _never)
        return await unless_client_leaves(collect_answer(first, events), _never)

    text, finished = asyncio.run(scenario())
    assert text == "Hello world" and finished.usage == Usage(3, 2)
    assert not generator.closed_early


async def _never() -> bool:
    return False


def test_a_client_that_leaves_cancels_the_work_and_closes_the_stream():
    generator = Scripted("m", ["w"] * 1000)  # ~10 s of answer

    async def scenario():
        _, events = open_chat(runtime_with(generator), QUESTION, model=None, max_tokens=8)
        started = asyncio.get_running_loop().time()

        async def gone_after_half_a_second() -> bool:
            return asyncio.get_running_loop().time() - started > 0.5

        first = await unless_client_leaves(anext(events), gone_after_half_a_second)
        result = await unless_client_leaves(collect_answer(first, events), gone_after_half_a_second)
        return result, asyncio.get_running_loop().time() - started

    result, elapsed = asyncio.run(scenario())
    assert result is None
    assert generator.closed_early
    assert elapsed < 5  # given up at the first poll after the client left, not at the answer's end
