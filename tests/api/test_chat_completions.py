"""`/v1/chat/completions` and `/v1/models` on a real uvicorn server, answered by the tiny in-process
Qwen2.5-VL: JSON and server-sent events, the official `openai` client, a client that leaves stopping
the decoding, bad requests (400/404), no answer model (501) and the API key."""

from __future__ import annotations

import base64
import time

import httpx
import orjson
import pytest

from pagelens.api import create_app
from pagelens.api.chat_protocol import ChatCompletionChunk, ChatCompletionResponse, ModelList
from pagelens.settings import Settings
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import API_KEY, AUTH, fake_runtime
from tests.conftest import encode, make_page

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the revenue of the company in 2023?"}]


def page_uri(width: int = 140, height: int = 196) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode(make_page(width, height, 1), "JPEG")).decode()


def with_image(uri: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "What is the revenue?"}]
    return [{"role": "user", "content": parts}]


def server_for(runtime):
    return uvicorn_in_thread(create_app(runtime=runtime))


@pytest.fixture(scope="module")
def runtime(tiny_vlm, tmp_path_factory):
    settings = Settings(model="fake/model", api_key=API_KEY, data_dir=str(tmp_path_factory.mktemp("data")))
    runtime = fake_runtime(settings=settings)
    runtime.generator = tiny_vlm
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def url(runtime):
    with server_for(runtime) as base_url:
        yield base_url


@pytest.fixture
def http(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        yield client


def sse_events(response: httpx.Response) -> list:
    """The `data:` payloads of a server-sent event stream: parsed JSON, or the string "[DONE]"."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def wait_for_record(vlm, previous, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while vlm.last_generation is previous:
        assert time.monotonic() < deadline, "the decode thread recorded no generation"
        time.sleep(0.01)
    return vlm.last_generation


def test_a_non_streamed_answer_in_openais_shape(http, tiny_vlm):
    response = http.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 16})
    assert response.status_code == 200, response.text
    body = ChatCompletionResponse.model_validate(response.json())
    assert body.object == "chat.completion" and body.id.startswith("chatcmpl-")
    assert body.model == tiny_vlm.model
    assert abs(body.created - time.time()) < 120
    [choice] = body.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert body.usage.completion_tokens == 16 and body.usage.prompt_tokens > 10
    assert body.usage.total_tokens == body.usage.prompt_tokens + 16


def test_a_streamed_answer_is_the_same_text_as_chunks_then_done(http):
    request = {"messages": QUESTION, "max_tokens": 24}
    whole = http.post("/v1/chat/completions", json=request).json()
    with http.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(event) for event in events[:-1]]
    assert len({chunk.id for chunk in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].delta.content is None
    contents = [chunk.choices[0].delta.content for chunk in chunks[1:-1]]
    assert len(contents) > 3  # token by token, not one block at the end
    assert "".join(contents) == whole["choices"][0]["message"]["content"]
    assert all(chunk.usage is None for chunk in chunks)  # no usage unless asked


def test_a_stream_carries_the_usage_when_asked(http):
    request = {"messages": QUESTION, "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        events = sse_events(response)
    usage_chunk = ChatCompletionChunk.model_validate(events[-2])
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 8
    assert "usage" in events[0] and events[0]["usage"] is None


def test_an_image_part_reaches_the_model(http):
    text = [{"role": "user", "content": [{"type": "text", "text": "What is the revenue?"}]}]
    text_only = http.post("/v1/chat/completions", json={"messages": text, "max_tokens": 1}).json()
    with_page = http.post("/v1/chat/completions", json={"messages": with_image(page_uri()), "max_tokens": 1}).json()
    # <|vision_start|>, the page's image tokens (140x196 -> 5x7 merged patches), <|vision_end|>
    assert with_page["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"] == 35 + 2


def test_the_openai_client_against_pagelens(url, tiny_vlm):
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    [card] = client.models.list().data
    assert card.id == tiny_vlm.model
    completion = client.chat.completions.create(model=card.id, messages=with_image(page_uri()), max_tokens=12)
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens > 37
    stream = client.chat.completions.create(
        model=card.id, messages=with_image(page_uri()), max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    pieces, usage, reasons = [], None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == completion.choices[0].message.content
    assert reasons[-1] == "length" and usage.completion_tokens == 12

    import openai

    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=card.id, messages=QUESTION, max_tokens=4
        )


def test_a_client_that_closes_the_stream_stops_the_decoding(http, tiny_vlm):
    previous = tiny_vlm.last_generation
    request = {"messages": QUESTION, "max_tokens": 2000, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:  # the role chunk and two content chunks
                break
    record = wait_for_record(tiny_vlm, previous)
    assert record.finish_reason == "cancelled"
    assert record.completion_tokens < 500  # not the 2000 asked for (~10 ms a token: stopped within a few)


def test_a_client_that_gives_up_on_a_non_streamed_answer_stops_the_decoding(url, tiny_vlm):
    previous = tiny_vlm.last_generation
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=0.5,
                   json={"messages": QUESTION, "max_tokens": 3000})  # fmt: skip
    record = wait_for_record(tiny_vlm, previous)
    assert record.finish_reason == "cancelled" and record.completion_tokens < 3000


def test_the_model_can_be_named_or_omitted(http, tiny_vlm):
    named = http.post("/v1/chat/completions", json={"model": tiny_vlm.model, "messages": QUESTION, "max_tokens": 4})
    assert named.status_code == 200
    other = http.post("/v1/chat/completions", json={"model": "Qwen/other", "messages": QUESTION, "max_tokens": 4})
    assert other.status_code == 404
    assert other.json()["error"]["type"] == "not_found"
    assert "'Qwen/other' is not served here" in other.json()["error"]["message"]
    assert tiny_vlm.model in other.json()["error"]["message"]


@pytest.mark.parametrize(
    ("request_body", "named"),
    [
        ({"messages": []}, "messages: List should have at least 1 item"),
        ({"max_tokens": 4}, "messages: Field required"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content"),
        ({"messages": QUESTION, "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": QUESTION, "max_tokens": 10**6}, "max_tokens: Input should be less than or equal to 32768"),
        ({"messages": QUESTION, "max_completion_tokens": -1}, "max_completion_tokens"),
        ({"messages": QUESTION, "n": 2}, "n: Input should be less than or equal to 1"),
        ({"messages": QUESTION, "max_tokens": 4090}, "over the model's context of 4096"),
        ({"messages": with_image("data:image/png;base64,bm90IGFuIGltYWdl")}, "messages[0].content[0].image_url.url"),
        ({"messages": with_image("https://example.com/a.png")}, "only data URIs are accepted"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_are_400_naming_the_field(http, request_body, named, stream):
    response = http.post("/v1/chat/completions", json={**request_body, "stream": stream})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_input"
    assert named in response.json()["error"]["message"]


def test_the_server_info_lists_the_routes(http):
    assert {"/v1/chat/completions", "/v1/models"} <= set(http.get("/").json()["routes"])


def test_the_openapi_document_declares_the_chat_routes_with_every_reference_resolved(http):
    import re

    document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/chat/completions"]["post"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "404", "501", "502", "504"} <= set(operation["responses"])
    assert "get" in document["paths"]["/v1/models"]
    references = set(re.findall(r"#/components/schemas/(\w+)", orjson.dumps(document).decode()))
    assert references - set(document["components"]["schemas"]) == set()


def test_the_api_key_is_required(url):
    response = httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION})
    assert response.status_code == 401
    assert httpx.get(f"{url}/v1/models").status_code == 401


def test_without_an_answer_model_501_names_the_flags(tmp_path):
    settings = Settings(model="fake/model", api_key=API_KEY, data_dir=str(tmp_path))
    runtime = fake_runtime(settings=settings)
    try:
        with server_for(runtime) as base_url:
            response = httpx.post(f"{base_url}/v1/chat/completions", headers=AUTH, json={"messages": QUESTION})
            models = httpx.get(f"{base_url}/v1/models", headers=AUTH)
            embeddings = httpx.post(f"{base_url}/v1/embeddings", headers=AUTH, json={"input": "still works"})
    finally:
        runtime.close()
    assert response.status_code == 501
    error = response.json()["error"]
    assert error["type"] == "llm_not_configured"
    assert "--llm-model" in error["message"] and "--llm-url" in error["message"]
    assert ModelList.model_validate(models.json()).data == []
    assert embeddings.status_code == 200  # the embedding routes do not need an answer model


UNREACHABLE = "the answer model's server at http://127.0.0.1:9/v1 is unreachable"


class FailsAfter:
    """An answer model that says `words`, then fails as an unreachable server would."""

    accepts_images = True
    model = "flaky"

    def __init__(self, words: list[str]) -> None:
        self.words = words

    async def stream(self, messages, *, max_tokens):
        from pagelens.errors import GeneratorUnavailable
        from pagelens.rag.generator import TextDelta

        for word in self.words:
            yield TextDelta(word)
        raise GeneratorUnavailable(UNREACHABLE)

    async def aclose(self):
        pass


def test_a_generator_failure_is_its_status_before_the_first_byte_and_an_error_event_after(tmp_path):
    from openai import APIError, InternalServerError, OpenAI

    settings = Settings(model="fake/model", api_key=API_KEY, data_dir=str(tmp_path))
    runtime = fake_runtime(settings=settings)
    try:
        with server_for(runtime) as base_url, httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as http:
            runtime.generator = FailsAfter([])
            at_once = http.post("/v1/chat/completions", json={"messages": QUESTION, "stream": True})
            runtime.generator = FailsAfter(["Half", " an"])
            whole = http.post("/v1/chat/completions", json={"messages": QUESTION})
            with http.stream("POST", "/v1/chat/completions", json={"messages": QUESTION, "stream": True}) as response:
                status, events = response.status_code, sse_events(response)
            client = OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
            with pytest.raises(APIError, match="unreachable"):
                for _ in client.chat.completions.create(model="flaky", messages=QUESTION, stream=True):
                    pass
            with pytest.raises(InternalServerError):  # 502: the openai client's class for 5xx
                client.chat.completions.create(model="flaky", messages=QUESTION)
    finally:
        runtime.close()
    assert at_once.status_code == 502 and at_once.json()["error"]["type"] == "llm_unavailable"
    assert whole.status_code == 502 and "unreachable" in whole.json()["error"]["message"]
    assert status == 200  # the stream had begun
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:3]]
    assert contents == ["Half", " an"]
    assert events[-2] == {"error": {"type": "llm_unavailable", "message": UNREACHABLE}}
    assert events[-1] == "[DONE]"
