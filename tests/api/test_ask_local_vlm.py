"""/ask answered by the in-process answer model: `--llm-model` with no `--llm-url` loads the tiny
random Qwen2.5-VL chat model through build_generator, and a real server answers from its pages."""

from __future__ import annotations

import json

import httpx

from pagelens.api import create_app
from pagelens.rag.local_vlm import TransformersVLM
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import fake_runtime
from tests.index.test_pdf import make_pdf


def test_the_in_process_vlm_answers_asks_whole_streamed_and_cached(tmp_path, tiny_vlm_dir):
    settings = Settings(model="fake", no_auth=True, data_dir=str(tmp_path / "data"), pdf_dpi=72,
                        llm_model=str(tiny_vlm_dir), device="cpu", dtype="float32", llm_max_pixels=200_000)  # fmt: skip
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings)
    try:
        assert isinstance(runtime.generator, TransformersVLM)
        with uvicorn_in_thread(create_app(runtime=runtime)) as url, httpx.Client(base_url=url, timeout=300) as http:
            http.post("/collections", json={"name": "docs"})
            http.post("/collections/docs/documents", files={"file": ("r.pdf", make_pdf(3))})
            body = {"question": "What colour is the page?", "k": 2, "max_tokens": 6}
            search = http.post("/collections/docs/search", json={"query": body["question"], "k": 2}).json()["results"]
            whole = http.post("/collections/docs/ask", json=body)
            assert whole.status_code == 200, whole.text
            answer = whole.json()
            assert answer["sources"] == search and answer["cached"] is False and answer["model"]
            assert 0 < answer["usage"]["completion_tokens"] <= 6 and answer["usage"]["prompt_tokens"] > 0
            assert answer["timings"]["generate_ms"] > 0 and isinstance(answer["answer"], str)
            events = []
            with http.stream("POST", "/collections/docs/ask", json={**body, "max_tokens": 5, "stream": True}) as r:
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
            names = [name for name, _ in events]
            assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) <= {"token"}
            assert events[-1][1]["usage"]["completion_tokens"] <= 5
            again = http.post("/collections/docs/ask", json=body).json()
            assert again["cached"] is True and again["answer"] == answer["answer"]
    finally:
        runtime.close()


def test_the_openai_generator_against_pagelens_own_chat_completions(tmp_path, tiny_vlm):
    """Server A serves the tiny VLM as /v1/chat/completions; server B answers asks with --llm-url A."""
    key = "a-key"
    serving = fake_runtime(settings=Settings(model="fake", api_key=key, data_dir=str(tmp_path / "a")))
    serving.generator = tiny_vlm
    try:
        with uvicorn_in_thread(create_app(runtime=serving)) as a_url:
            settings = Settings(model="fake", no_auth=True, data_dir=str(tmp_path / "b"), pdf_dpi=72,
                                llm_url=f"{a_url}/v1", llm_api_key=key, llm_max_pixels=200_000)  # fmt: skip
            asking = fake_runtime(FakeBackend(dim=128), settings=settings)
            try:
                with (
                    uvicorn_in_thread(create_app(runtime=asking)) as b_url,
                    httpx.Client(base_url=b_url, timeout=300) as http,
                ):
                    http.post("/collections", json={"name": "docs"})
                    http.post("/collections/docs/documents", files={"file": ("r.pdf", make_pdf(2))})
                    response = http.post("/collections/docs/ask", json={"question": "Which colour?", "k": 2,
                                                                       "max_tokens": 4})  # fmt: skip
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["model"] == tiny_vlm.model and len(body["sources"]) == 2
                    assert 0 < body["usage"]["completion_tokens"] <= 4 and body["usage"]["prompt_tokens"] > 0
            finally:
                asking.close()
    finally:
        serving.generator = None  # the fixture's model: the fixture closes it
        serving.close()
