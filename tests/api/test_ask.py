"""`POST /collections/{c}/ask` through a real uvicorn server on loopback (fake 128-d embedder, real
Qdrant Edge, real PDF rendering) answered by the stand-in OpenAI-compatible server, also real HTTP:
what the answer model receives, sources, streaming, the answer cache, and every failure."""

from __future__ import annotations

import base64
import io
import json
import statistics
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image

from pagelens.api import create_app
from pagelens.api.protocol import AskResponse
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from pagelens.testing.llm_standin import StandInLLM, image_urls, texts, tokens, unreachable_url
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import fake_runtime
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf
from tests.rag.documents import text_pdf

KEY = "ask-test-key"
LLM_KEY = "sk-llm-secret"
ANSWER = "Revenue grew to 42 M [1], while costs fell [2]; see also [3]."


@pytest.fixture(scope="module")
def standin():
    server = StandInLLM(ANSWER, tokens_per_second=2000)
    with server.running() as url:
        server.url = url
        yield server


@pytest.fixture(autouse=True)
def standin_behaves(standin):
    standin.behave()
    standin.tokens_per_second = 2000
    standin.stream_cut.clear()
    yield
    standin.behave()


@contextmanager
def pagelens(tmp_path, **options):
    """A pagelens server on loopback (uvicorn in a thread) with `options` as settings; yields an httpx client."""
    settings = Settings(model="fake", api_key=KEY, data_dir=str(tmp_path / "data"), pdf_dpi=72, **options)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings)
    try:
        with (
            uvicorn_in_thread(create_app(runtime=runtime)) as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client,
        ):
            yield client
    finally:
        runtime.close()


@pytest.fixture
def server(tmp_path, standin):
    with pagelens(tmp_path, llm_url=standin.url, llm_api_key=LLM_KEY) as client:
        yield client


def upload(client, collection, data, name="report.pdf", metadata=None):
    client.post("/collections", json={"name": collection})
    form = {"metadata": json.dumps(metadata)} if metadata else None
    response = client.post(f"/collections/{collection}/documents", files={"file": (name, data)}, data=form)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(client, collection, body):
    """The `(event, data)` pairs of a streamed ask, in order."""
    events = []
    with client.stream("POST", f"/collections/{collection}/ask", json={**body, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events


def mean_colour(image: Image.Image) -> tuple[float, ...]:
    data = image.convert("RGB").resize((8, 8)).tobytes()
    return tuple(sum(data[c::3]) / 64 for c in range(3))


def test_the_model_receives_the_question_and_the_top_k_pages_in_search_order(server, standin):
    upload(server, "reports", make_pdf(6))
    upload(server, "reports", encode(make_page(900, 1400, 7)), name="scan.png")
    question = "What did revenue do in 2023?"
    search = server.post("/collections/reports/search", json={"query": question, "k": 4}).json()["results"]
    before = len(standin.requests)
    response = server.post("/collections/reports/ask", json={"question": question, "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    AskResponse.model_validate(body)
    assert body["sources"] == search and body["answer"] == ANSWER and body["cached"] is False
    assert body["model"] == "standin-vlm" and body["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": standin._prompt_tokens(standin.requests[-1]),
                             "completion_tokens": len(tokens(ANSWER))}  # fmt: skip
    assert set(body["timings"]) == {"embed_ms", "search_ms", "images_ms", "ttft_ms", "generate_ms", "total_ms"}
    assert body["timings"]["total_ms"] >= body["timings"]["generate_ms"] >= body["timings"]["ttft_ms"] > 0
    assert len(standin.requests) == before + 1
    request = standin.requests[-1]
    assert request["max_tokens"] == 512 and request["stream"] is True
    assert standin.headers[-1]["authorization"] == f"Bearer {LLM_KEY}"
    urls = image_urls(request)
    assert len(urls) == 4 and all(url.startswith("data:image/jpeg;base64,") for url in urls)
    labels = [text for text in texts(request) if text.startswith("[")]
    assert labels == [f"[{n}] {hit['name']}, page {hit['page']}" for n, hit in enumerate(search, 1)]
    assert any(question in text for text in texts(request))
    assert "cite" in request["messages"][0]["content"].lower()
    for url, hit in zip(urls, search, strict=True):
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert sent.format == "JPEG" and sent.width * sent.height <= 1_000_000
        page = server.get(f"/collections/reports/documents/{hit['document_id']}/pages/{hit['page']}")
        original = Image.open(io.BytesIO(page.content))
        assert abs(sent.width / sent.height - original.width / original.height) < 0.02
        assert max(abs(a - b) for a, b in zip(mean_colour(sent), mean_colour(original), strict=True)) < 6
    scan = next(i for i, hit in enumerate(search) if hit["name"] == "scan.png") if any(
        hit["name"] == "scan.png" for hit in search) else None  # fmt: skip
    if scan is not None:  # 900x1400 = 1.26 Mpx: sent reduced to the megapixel
        sent = Image.open(io.BytesIO(base64.b64decode(urls[scan].split(",", 1)[1])))
        assert 950_000 < sent.width * sent.height <= 1_000_000


def test_the_stream_is_sources_then_tokens_then_done_and_its_tokens_are_the_answer(server, standin):
    upload(server, "reports", make_pdf(4))
    body = {"question": "How did costs change?", "k": 2}
    events = stream_events(server, "reports", body)
    names = [event for event, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    search = server.post("/collections/reports/search", json={"query": body["question"], "k": 2}).json()["results"]
    assert events[0][1] == {"sources": search}
    streamed = "".join(data["text"] for event, data in events if event == "token")
    done = events[-1][1]
    assert done["cached"] is False and done["usage"]["completion_tokens"] == len(tokens(ANSWER))
    assert done["timings"]["total_ms"] > 0 and done["model"] == "standin-vlm"
    # the same generator output, not streamed (another max_tokens: not the cached answer)
    whole = server.post("/collections/reports/ask", json={**body, "max_tokens": 500}).json()
    assert whole["cached"] is False and whole["answer"] == streamed == ANSWER
    # cached, streamed: the same pieces again
    again = stream_events(server, "reports", body)
    assert again[-1][1]["cached"] is True and [e for e in again if e[0] == "token"] == events[1:-1]


def test_an_identical_ask_is_cached_until_the_collection_changes(server, standin):
    first = upload(server, "reports", make_pdf(3))
    body = {"question": "What was revenue?", "k": 2, "filter": None}
    assert server.post("/collections/reports/ask", json=body).json()["cached"] is False
    asked = len(standin.requests)
    hits = [server.post("/collections/reports/ask", json={**body, "question": "  what WAS revenue? "}).json()
            for _ in range(15)]  # fmt: skip
    assert all(hit["cached"] is True and hit["answer"] == ANSWER for hit in hits)
    assert len(standin.requests) == asked  # no generation
    assert statistics.median(hit["timings"]["total_ms"] for hit in hits) < 5
    assert hits[0]["timings"]["embed_ms"] == hits[0]["timings"]["generate_ms"] == 0
    # other arguments: another answer
    assert server.post("/collections/reports/ask", json={**body, "k": 3}).json()["cached"] is False
    # an upload, a metadata change, a delete: each makes the same ask uncached
    upload(server, "reports", encode(make_page(200, 300, 4)), name="new.png")
    assert server.post("/collections/reports/ask", json=body).json()["cached"] is False
    assert server.post("/collections/reports/ask", json=body).json()["cached"] is True
    server.patch(f"/collections/reports/documents/{first['id']}", json={"metadata": {"year": 2024}})
    assert server.post("/collections/reports/ask", json=body).json()["cached"] is False
    assert server.delete(f"/collections/reports/documents/{first['id']}").status_code == 200
    after_delete = server.post("/collections/reports/ask", json=body).json()
    assert after_delete["cached"] is False and all(s["document_id"] != first["id"] for s in after_delete["sources"])
    # the collection deleted and made again with other pages: never the old answer
    server.delete("/collections/reports")
    upload(server, "reports", make_pdf(2))
    assert server.post("/collections/reports/ask", json=body).json()["cached"] is False
    metrics = server.get("/metrics").text
    assert "pagelens_answer_cache_hits_total 16.0" in metrics and "pagelens_answer_cache_misses_total 6.0" in metrics
    assert 'pagelens_ask_stage_seconds_count{stage="total"} 22.0' in metrics
    assert 'pagelens_ask_stage_seconds_count{stage="ttft"} 6.0' in metrics
    assert "pagelens_query_cache_hits_total" in metrics and "pagelens_query_cache_misses_total" in metrics


def test_errors_of_the_answer_model_come_as_502_or_504_and_as_an_error_event(tmp_path, server, standin):
    upload(server, "reports", make_pdf(2))
    standin.fail(500, "the model fell over")
    response = server.post("/collections/reports/ask", json={"question": "why?", "k": 1})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "llm_error" and "500" in error["message"] and "the model fell over" in error["message"]
    events = stream_events(server, "reports", {"question": "why?", "k": 1})
    assert [e for e, _ in events] == ["sources", "error"] and events[1][1] == {"error": error}
    standin.behave()
    ok = server.post("/collections/reports/ask", json={"question": "why?", "k": 1}).json()
    assert ok["cached"] is False  # a failure is never cached


def test_an_unreachable_answer_model_is_502_naming_its_url_never_its_key(tmp_path):
    down = unreachable_url()
    with pagelens(tmp_path, llm_url=down, llm_api_key=LLM_KEY) as client:
        upload(client, "reports", make_pdf(1))
        response = client.post("/collections/reports/ask", json={"question": "why?", "k": 1})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "llm_unavailable" and down in error["message"] and LLM_KEY not in response.text
        events = stream_events(client, "reports", {"question": "why?", "k": 1})
        assert events[-1] == ("error", {"error": error})


def test_a_silent_answer_model_is_504_and_search_and_embeddings_keep_working_meanwhile(tmp_path, standin):
    with pagelens(tmp_path, llm_url=standin.url, llm_timeout=3.0) as client:
        upload(client, "reports", make_pdf(2))
        standin.hang()
        outcome = {}

        def ask():
            outcome["response"] = client.post("/collections/reports/ask", json={"question": "why?", "k": 1})

        asking = threading.Thread(target=ask)
        started = time.monotonic()
        asking.start()
        time.sleep(0.5)  # the ask is waiting on the model now
        for _ in range(3):
            began = time.monotonic()
            assert client.post("/collections/reports/search", json={"query": "why?", "k": 1}).status_code == 200
            embedded = client.post("/embed", json={"texts": ["a query"]})
            assert embedded.status_code == 200 and time.monotonic() - began < 2
        assert client.get("/health").status_code == 200
        asking.join(30)
        response = outcome["response"]
        assert response.status_code == 504 and response.json()["error"]["type"] == "llm_timeout"
        assert 3.0 <= time.monotonic() - started < 15
        events = stream_events(client, "reports", {"question": "why now?", "k": 1})
        assert [e for e, _ in events] == ["sources", "error"] and events[1][1]["error"]["type"] == "llm_timeout"


def test_a_client_that_leaves_a_stream_stops_the_generation_upstream(server, standin):
    upload(server, "reports", make_pdf(2))
    standin.tokens_per_second = 10  # 12 tokens: over a second to the end
    cut_before = standin.streams_cut
    body = {"question": "leaving early?", "k": 1, "stream": True}
    with server.stream("POST", "/collections/reports/ask", json=body) as response:
        lines = response.iter_lines()
        seen = []
        for line in lines:
            if line.startswith("event: "):
                seen.append(line[7:])
            if seen.count("token") == 1:
                break
    assert seen == ["sources", "token"]
    assert standin.stream_cut.wait(5) and standin.streams_cut == cut_before + 1


def test_a_client_that_leaves_before_a_whole_answer_stops_the_generation_upstream(server, standin):
    upload(server, "reports", make_pdf(2))
    standin.tokens_per_second = 5  # 12 tokens: over two seconds
    cut_before, finished_before = standin.streams_cut, standin.streams_finished
    with pytest.raises(httpx.ReadTimeout):
        server.post("/collections/reports/ask", json={"question": "leaving early?", "k": 1}, timeout=0.8)
    assert standin.stream_cut.wait(5) and standin.streams_cut == cut_before + 1
    assert standin.streams_finished == finished_before


def test_a_silent_model_gets_heartbeat_comments_in_the_stream(server, standin, monkeypatch):
    from pagelens.api.routes import ask as ask_route

    monkeypatch.setattr(ask_route, "HEARTBEAT_SECONDS", 0.2)
    upload(server, "reports", make_pdf(1))
    standin.first_token_seconds = 1.0
    try:
        body = {"question": "slow start?", "k": 1, "stream": True}
        with server.stream("POST", "/collections/reports/ask", json=body) as response:
            lines = [line for line in response.iter_lines() if line]
    finally:
        standin.first_token_seconds = 0.0
    first_token = next(i for i, line in enumerate(lines) if line == "event: token")
    assert lines[0] == "event: sources" and lines[first_token - 1] == ": waiting"
    assert lines.count(": waiting") >= 3 and lines[-2] == "event: done"


def test_without_an_answer_model_ask_is_501_naming_the_flags_and_search_works(tmp_path):
    with pagelens(tmp_path) as client:
        upload(client, "reports", make_pdf(1))
        response = client.post("/collections/reports/ask", json={"question": "why?"})
        assert response.status_code == 501 and response.json()["error"]["type"] == "llm_not_configured"
        message = response.json()["error"]["message"]
        assert "--llm-url" in message and "--llm-model" in message and "PAGELENS_LLM_URL" in message
        assert client.post("/collections/reports/search", json={"query": "why?"}).status_code == 200


BAD_INPUT = [
    ({"question": ""}, "question is empty"),
    ({"question": "   "}, "question is empty"),
    ({"question": "x" * 101}, "over the limit of 100"),
    ({"question": "why?", "k": 0}, "k"),
    ({"question": "why?", "k": 21}, "k"),
    ({"question": "why?", "max_tokens": 0}, "max_tokens"),
    ({"question": "why?", "max_tokens": 8193}, "max_tokens"),
    ({"question": "why?", "mode": "fuzzy"}, "mode"),
    ({"question": "why?", "filter": {"nope": 1}}, "unknown filter field"),
    ({"k": 3}, "question"),
]


def test_bad_input_is_a_400_naming_it_and_never_reaches_the_model(tmp_path, standin):
    with pagelens(tmp_path, llm_url=standin.url, max_query_chars=100) as client:
        upload(client, "reports", make_pdf(1))
        asked = len(standin.requests)
        for body, words in BAD_INPUT:
            response = client.post("/collections/reports/ask", json=body)
            assert response.status_code == 400, body
            assert words in response.json()["error"]["message"], (body, response.text)
        assert len(standin.requests) == asked


def test_when_nothing_is_retrieved_the_model_is_not_asked(server, standin):
    upload(server, "reports", make_pdf(2), metadata={"year": 2023})
    asked = len(standin.requests)
    body = server.post("/collections/reports/ask", json={"question": "why?", "filter": {"year": 1999}}).json()
    assert body["sources"] == [] and "No page of the collection matches" in body["answer"]
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0} and len(standin.requests) == asked


def test_an_unknown_collection_is_404(server, standin):
    response = server.post("/collections/nowhere/ask", json={"question": "why?"})
    assert response.status_code == 404 and "nowhere" in response.json()["error"]["message"]


def test_text_only_models_get_the_text_layers_and_pages_without_one_are_marked(tmp_path, standin):
    with pagelens(tmp_path, llm_url=standin.url, llm_images="off") as client:
        upload(client, "docs", text_pdf(["Revenue was 42 M in 2023", "", "Costs fell by 3 M"]))
        body = client.post("/collections/docs/ask", json={"question": "revenue?", "k": 3}).json()
        assert body["answer"] == ANSWER and len(body["sources"]) == 3
        request = standin.requests[-1]
        assert image_urls(request) == []
        (prompt,) = [m["content"] for m in request["messages"] if m["role"] == "user"]
        assert isinstance(prompt, str) and "Revenue was 42 M in 2023" in prompt and "Costs fell by 3 M" in prompt
        assert prompt.count("(this page has no text layer)") == 1 and "revenue?" in prompt
        for number, source in enumerate(body["sources"], 1):
            assert f"[{number}] report.pdf, page {source['page']}:" in prompt
        # a collection of scans has nothing a text-only model can read: a clear 422
        upload(client, "scans", encode(make_page(300, 400, 1)), name="scan.png")
        response = client.post("/collections/scans/ask", json={"question": "revenue?", "k": 1})
        assert response.status_code == 422 and "--llm-images" in response.json()["error"]["message"]
