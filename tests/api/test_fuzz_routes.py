"""An OpenAPI-driven fuzz of every route (schemathesis) against a real uvicorn server on loopback
over the fake model, with a collection holding a real PDF: whatever schemathesis generates from
the server's own OpenAPI document, no route answers 5xx and none hangs. Its answer model is the
stand-in OpenAI-compatible server (an /ask with none configured is a 501 by design). FUZZ_EXAMPLES per
operation keeps it bounded (about a minute on 2 cores)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from pagelens.api import create_app
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from pagelens.testing.llm_standin import StandInLLM
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import fake_runtime
from tests.index.test_pdf import make_pdf

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUZZ_EXAMPLES = 25
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")  # collection imports: any bytes
REQUEST_TIMEOUT = 30  # seconds: a route slower than this on these tiny inputs counts as a hang


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    with StandInLLM(tokens_per_second=5000).running() as llm_url:
        runtime = fake_runtime(FakeBackend(dim=128), settings=Settings(model="fake/model", api_key=KEY,
                                                                       data_dir=str(data_dir), pdf_dpi=36,
                                                                       llm_url=llm_url))  # fmt: skip
        yield from _serve(runtime)


def _serve(runtime):
    import httpx

    with uvicorn_in_thread(create_app(runtime=runtime)) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            assert client.post("/collections", json={"name": "c"}).status_code == 201
            files = {"file": ("a.pdf", make_pdf(2), "application/pdf")}
            assert client.post("/collections/c/documents", files=files, data={"metadata": '{"team": "x"}'}).is_success
        yield url
    runtime.close()


def not_configured(response) -> bool:
    """501 `llm_not_configured`: this server has no answer model, as documented (tests/api/test_chat_completions.py
    covers the routes with one)."""
    return response.status_code == 501 and '"llm_not_configured"' in response.text


def test_no_route_answers_5xx_or_hangs(server_url):
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json", headers=AUTH)
    failures: list[str] = []
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            response = case.call(headers=AUTH, timeout=REQUEST_TIMEOUT)  # a hang raises a timeout
            if response.status_code >= 500 and not not_configured(response):
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        fuzz()
    assert len(labels) >= 15, labels  # every route was fuzzed
    assert failures == []
