"""Live recall through a real uvicorn server on loopback over the tiny ColQwen2.5 checkpoint: with
PAGELENS_RECALL_SAMPLE=1 every fast search is re-run exactly in the background, and the recall
the server reports for the collection (GET /collections/{c} and /metrics) equals recall@k of fast
vs exact computed directly on the same queries (the bar: within 0.02).

The collection is created through the server; its pages are written into its store directly
(synthetic 128-wide pages, cut to 300 rows so storing them is quick; the tiny model's random
queries find them at recall ~0.5 with prefetch 10), which is why the server runs in this process
rather than as `pagelens serve`."""

from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import pytest

from pagelens.api import create_app
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.index.recall import recall_at_k
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.servers import uvicorn_in_thread

KEY = "recall-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
PAGES, ROWS, K, PREFETCH = 300, 300, 10, 10  # over 20 x PREFETCH pages: the fast mode's coarse cut runs
QUERIES = [f"quarterly report {n} on topic {n % 7} and region {n % 5}" for n in range(30)]
FILTERED = 10  # the first queries also carry a metadata filter


def fill(collection) -> None:
    """PAGES synthetic pages (their first ROWS rows) in documents of 10, half with `{"half": "a"}`,
    each with the record an upload writes (where search filters learn the metadata fields)."""
    corpus = SyntheticCorpus(PAGES, own_concepts=96, background=0.1)
    for document in range(PAGES // 10):
        metadata = {"half": "a" if document % 2 else "b"}
        pages = (corpus.page(page)[:ROWS] for page in range(document * 10, document * 10 + 10))
        document_id = f"{document:032x}"
        collection.store.add_document(document_id, pages, metadata=metadata)
        record = {"id": document_id, "name": f"{document}.pdf", "pages": 10, "metadata": metadata, "kind": "pdf"}
        (collection.files / f"{document_id}.json").write_text(json.dumps(record))
        collection.metadata_keys.set(document_id, metadata)


def wait_for_samples(client: httpx.Client, wanted: int) -> dict:
    deadline = time.monotonic() + 180
    while True:
        info = client.get("/collections/recall").json()["fast_search"]
        if info["samples"] >= wanted or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


@pytest.fixture
def runtime(tiny_model, tmp_path):
    settings = Settings(model=str(tiny_model), device="cpu", dtype="float32", data_dir=str(tmp_path / "data"),
                        api_key=KEY, recall_sample=1.0)  # fmt: skip
    runtime = Runtime(settings).start()
    yield runtime
    runtime.close()


def test_the_recall_a_server_measures_equals_fast_vs_exact_computed_directly(runtime):
    with uvicorn_in_thread(create_app(runtime=runtime)) as url, httpx.Client(base_url=url, headers=HEADERS,
                                                                             timeout=60) as client:  # fmt: skip
        assert client.post("/collections", json={"name": "recall"}).status_code == 201
        info = client.get("/collections/recall").json()["fast_search"]
        assert info["prefetch"] == 100 and info["samples"] == 0 and info["recall"] is None
        assert info["sample_rate"] == 1.0 and info["target_recall"] == 0.95
        fill(runtime.collections.index().get("recall"))
        for number, text in enumerate(QUERIES):
            body = {"query": text, "k": K, "mode": "fast", "prefetch": PREFETCH}
            if number < FILTERED:
                body["filter"] = {"half": "a"}
            response = client.post("/collections/recall/search", json=body)
            assert response.status_code == 200, response.text
            if number < FILTERED:
                assert {hit["metadata"]["half"] for hit in response.json()["results"]} == {"a"}
        info = wait_for_samples(client, len(QUERIES))
        metrics = client.get("/metrics").text
    assert info["samples"] == len(QUERIES)
    assert info["prefetch"] == 100  # searches that named their prefetch leave the default alone
    assert info["samples_at_prefetch"] == 0
    gauge = re.search(r'^pagelens_search_recall\{collection="recall"\} ([0-9.e-]+)$', metrics, re.MULTILINE)
    assert gauge is not None and float(gauge.group(1)) == pytest.approx(info["recall"], abs=1e-9)
    assert re.search(r'^pagelens_search_prefetch\{collection="recall"\} 100\.0$', metrics, re.MULTILINE)
    assert re.search(r"^pagelens_recall_checks_total 30\.0$", metrics, re.MULTILINE)

    store = runtime.collections.index().get("recall").store
    recalls = []
    for number, text in enumerate(QUERIES):
        (query,) = runtime.embed_queries([text])
        where = {"half": "a"} if number < FILTERED else None
        fast = store.search(query, k=K, mode="fast", prefetch=PREFETCH, filter=where)
        exact = store.search(query, k=K, mode="exact", filter=where)
        recalls.append(recall_at_k(fast, exact))
    offline = float(np.mean(recalls))
    assert offline < 0.9, "fast search finds (nearly) every page here: the comparison would prove little"
    print(f"recall@{K} at prefetch {PREFETCH}: measured by the server {info['recall']}, computed directly {offline}")
    assert abs(info["recall"] - offline) <= 0.02, (info["recall"], offline)
