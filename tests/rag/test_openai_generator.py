"""The OpenAI-compatible generator against the stand-in server over real HTTP on loopback: the
answer streamed piece by piece, usage, and each failure as the typed error of the contract."""

from __future__ import annotations

import asyncio

import pytest

from pagelens.errors import GeneratorFailed, GeneratorTimeout, GeneratorUnavailable
from pagelens.rag.generator import Finished, Generator, TextDelta
from pagelens.rag.openai_generator import OpenAIGenerator, public_url
from pagelens.testing.llm_standin import StandInLLM, tokens, unreachable_url

MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "What was the revenue?"}]}]
ANSWER = "Revenue was 42 M in 2023 [1], up from 40 M [2]."


@pytest.fixture
def standin():
    server = StandInLLM(ANSWER, tokens_per_second=1000)
    with server.running() as url:
        server.url = url
        yield server


async def collect(generator, max_tokens=64):
    events = []
    async for event in generator.stream(MESSAGES, max_tokens=max_tokens):
        events.append(event)
    return events


def test_the_answer_streams_as_the_server_sends_it_then_one_finished_with_usage(standin):
    generator = OpenAIGenerator(standin.url, model="standin-vlm", api_key="sk-secret")
    assert isinstance(generator, Generator) and generator.accepts_images
    events = asyncio.run(collect(generator))
    assert [e.text for e in events[:-1]] == tokens(ANSWER) and all(isinstance(e, TextDelta) for e in events[:-1])
    assert events[-1] == Finished(events[-1].usage, "stop") and events[-1].usage.completion_tokens == len(
        tokens(ANSWER)
    )
    assert events[-1].usage.prompt_tokens == 4  # the words of the question
    (body,) = standin.requests
    assert body["model"] == "standin-vlm" and body["stream"] is True and body["max_tokens"] == 64
    assert body["messages"] == MESSAGES
    assert standin.headers[0]["authorization"] == "Bearer sk-secret"


def test_max_tokens_cuts_the_answer_and_the_model_is_the_servers_first_when_unset(standin):
    generator = OpenAIGenerator(standin.url)
    events = asyncio.run(collect(generator, max_tokens=3))
    assert "".join(e.text for e in events[:-1]) == "".join(tokens(ANSWER)[:3]) and events[-1].finish_reason == "length"
    assert generator.model == "standin-vlm" and standin.requests[-1]["model"] == "standin-vlm"


def test_an_error_status_is_generator_failed_with_the_status_and_message(standin):
    standin.fail(503, "the GPU is busy")
    with pytest.raises(GeneratorFailed) as caught:
        asyncio.run(collect(OpenAIGenerator(standin.url, model="m", api_key="sk-secret")))
    assert "503" in caught.value.message and "the GPU is busy" in caught.value.message
    assert caught.value.http_status == 502 and "sk-secret" not in caught.value.message


def test_an_unreachable_server_is_named_by_its_url_never_its_key_or_password():
    down = unreachable_url().replace("http://", "http://alice:hunter2@")
    with pytest.raises(GeneratorUnavailable) as caught:
        asyncio.run(collect(OpenAIGenerator(down, model="m", api_key="sk-secret")))
    error = caught.value
    assert type(error) is GeneratorUnavailable and error.error_type == "llm_unavailable" and error.http_status == 502
    assert public_url(down) in error.message and "hunter2" not in error.message and "sk-secret" not in error.message


def test_a_server_silent_for_longer_than_the_timeout_is_generator_timeout(standin):
    standin.hang()
    with pytest.raises(GeneratorTimeout) as caught:
        asyncio.run(collect(OpenAIGenerator(standin.url, model="m", timeout=0.5)))
    assert caught.value.http_status == 504 and "0.5 s" in caught.value.message


def test_closing_the_stream_early_closes_the_upstream_stream(standin):
    standin.tokens_per_second = 20  # 16 tokens: 0.8 s if read to the end

    async def first_then_close():
        stream = OpenAIGenerator(standin.url, model="m").stream(MESSAGES, max_tokens=64)
        first = await anext(stream)
        await stream.aclose()
        return first

    assert asyncio.run(first_then_close()) == TextDelta(tokens(ANSWER)[0])
    assert standin.stream_cut.wait(5) and standin.streams_cut == 1 and standin.streams_finished == 0


def test_a_url_without_v1_that_404s_says_so(standin):
    with pytest.raises(GeneratorFailed) as caught:
        asyncio.run(collect(OpenAIGenerator(standin.url.removesuffix("/v1"), model="m")))
    assert "404" in caught.value.message and "should --llm-url end with /v1?" in caught.value.message
