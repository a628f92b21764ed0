"""The Python client against real HTTP servers: round trips, 413 splitting, Retry-After retries,
and typed errors that are never retried."""

from __future__ import annotations

import io
import threading

import httpx
import numpy as np
import pytest

from pagelens.api import create_app
from pagelens.client import Client
from pagelens.engine import EngineConfig
from pagelens.errors import InvalidInput, Overloaded, Unauthorized
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend, embed_alone
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import fake_runtime
from tests.api.server import REAL_KEY
from tests.conftest import encode, make_page


@pytest.fixture
def fake_server():
    """A real uvicorn server over the fake backend, at most 2 inputs per request."""
    backend = FakeBackend()
    service = fake_runtime(backend, settings=Settings(model="fake", api_key="k"), max_inputs_per_request=2)
    with uvicorn_in_thread(create_app(runtime=service)) as url:
        yield url, backend
    service.engine.close()


def test_round_trip_against_the_real_model_server(server):
    pages = [make_page(300, 400, 1), make_page(200, 120, 2)]
    with Client(server, api_key=REAL_KEY) as client:
        vectors = client.embed_images([encode(pages[0]), pages[1]])
        queries = client.embed_queries(["revenue by quarter"])
        scores = client.score("revenue by quarter", embeddings=vectors)
        assert client.health()["status"] == "ok" and client.info()["model"]["family"] == "colqwen2_5"
    raw = httpx.post(
        f"{server}/embeddings",
        json={"input_type": "text", "inputs": ["revenue by quarter"]},
        headers={"Authorization": f"Bearer {REAL_KEY}"},
    )
    np.testing.assert_array_equal(queries[0], np.load(io.BytesIO(raw.content))["emb_0"])
    assert [v.shape[1] for v in vectors] == [128, 128] and vectors[0].shape[0] != vectors[1].shape[0]
    expected = [float((queries[0] @ v.T).max(axis=1).sum()) for v in vectors]
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_413_splits_the_batch_and_keeps_order(fake_server):
    url, backend = fake_server
    texts = [f"query number {i}" for i in range(5)]
    with Client(url, api_key="k") as client:
        results = client.embed_queries(texts)
    assert len(results) == 5
    for text, got in zip(texts, results, strict=True):
        np.testing.assert_array_equal(got, embed_alone(backend, "query", text))


def test_a_400_is_raised_with_the_callers_index_and_never_retried(fake_server):
    url, _ = fake_server
    images = [encode(make_page(50, 50, i)) for i in range(5)]
    images[3] = b"%PDF-1.4 definitely not an image"
    with Client(url, api_key="k") as client:
        with pytest.raises(InvalidInput) as raised:
            client.embed_images(images)
        assert raised.value.index == 3 and "PDF" in raised.value.message
        assert client.retries == 0
    with Client(url, api_key="wrong") as client, pytest.raises(Unauthorized):
        client.embed_queries(["x"])
    assert client.retries == 0


def test_429_is_retried_after_retry_after_until_it_succeeds():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: release.wait(10))
    config = EngineConfig(max_queued_items=1, max_batch_queries=1, max_wait_ms=0)
    service = fake_runtime(backend, config, settings=Settings(model="fake"))
    with uvicorn_in_thread(create_app(runtime=service)) as url:
        blocker = service.engine.submit_queries(["fills the queue"])
        threading.Timer(0.5, release.set).start()
        with Client(url, max_retry_wait=2) as client:
            (result,) = client.embed_queries(["patient query"])
            assert client.retries >= 1
        blocker[0].result(5)
        np.testing.assert_array_equal(result, embed_alone(backend, "query", "patient query"))
        release.clear()
        service.engine.submit_queries(["fills the queue again"])
        with Client(url, max_retries=1, max_retry_wait=0.1) as client, pytest.raises(Overloaded):
            client.embed_queries(["gives up"])
        release.set()
    service.engine.close()


def test_collections_and_search_through_the_client(tmp_path):
    from pagelens.errors import NotFound
    from tests.index.test_pdf import make_pdf

    backend = FakeBackend(dim=128)
    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(backend, settings=settings)
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k") as client:
        assert client.create_collection("docs")["name"] == "docs"
        added = client.add_document("docs", make_pdf(3), filename="a.pdf", metadata={"team": "finance"})
        assert added["pages"] == 3 and added["created"]
        assert client.add_document("docs", make_pdf(3), filename="a.pdf")["created"] is False
        hits = client.search("docs", "budget table", k=2, filter={"team": "finance"})
        assert len(hits) == 2 and hits[0]["document_id"] == added["id"]
        fast = client.search("docs", "budget table", k=2, mode="fast", prefetch=3)
        assert [(h["page"], h["score"]) for h in fast] == [(h["page"], h["score"]) for h in hits]
        with pytest.raises(InvalidInput, match="prefetch"):
            client.search("docs", "budget table", mode="fast", prefetch=0)
        assert client.page_image("docs", added["id"], 2).size == (210, 300)
        assert [c["pages"] for c in client.collections()] == [3]
        client.delete_document("docs", added["id"])
        assert client.documents("docs") == []
        client.delete_collection("docs")
        with pytest.raises(NotFound):
            client.search("docs", "anything")
    service.engine.close()
