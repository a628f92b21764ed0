"""The page stores (Qdrant Edge, and the Qdrant server store on qdrant-client's local mode and on a
real server when one is configured; see backends.py): exact MaxSim ranking, fast two-stage mode,
idempotent documents, and whole-document atomicity across a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from pagelens.errors import InvalidInput
from pagelens.index.pages import POOLED_ROWS, cluster_pool
from pagelens.index.scoring import maxsim
from tests.index.backends import close_store, open_store

REPO = Path(__file__).resolve().parents[2]


def structured_pages(count: int, tokens: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Pages whose vectors cluster around a few page-specific topics (not pure noise), unit rows."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((40, 128))
    pages = []
    for _ in range(count):
        mix = topics[rng.choice(40, size=3, replace=False)]
        rows = mix[rng.integers(0, 3, size=tokens)] + 0.6 * rng.standard_normal((tokens, 128))
        pages.append((rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32))
    return pages


def query_like(page: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = page[rng.choice(len(page), 12, replace=False)] + 0.4 * rng.standard_normal((12, 128))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fp16(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float16).astype(np.float32)


def test_exact_search_ranks_as_maxsim_does(store):
    pages = structured_pages(60)
    for start in range(0, 60, 10):
        store.add_document(f"doc{start // 10}", pages[start : start + 10], name=f"d{start}.pdf", metadata={"n": start})
    assert store.page_count() == 60
    for seed in range(3):
        query = query_like(pages[7 + seed * 11], seed)
        hits = store.search(query, k=10)
        expected = sorted(range(60), key=lambda i: -maxsim(query, fp16(pages[i])))[:10]
        assert [(int(h.document_id[3:]) * 10 + h.page - 1) for h in hits] == expected
        for hit in hits:
            index = int(hit.document_id[3:]) * 10 + hit.page - 1
            assert abs(hit.score - maxsim(query, fp16(pages[index]))) < 1e-2
    assert hits[0].name.startswith("d") and "n" in hits[0].metadata


def test_fast_mode_reranks_exactly_and_finds_the_exact_top_hits(store):
    pages = structured_pages(200, tokens=150, seed=1)  # more tokens than centroids: the prefetch is approximate
    store.add_document("all", pages)
    recalls = []
    for seed in range(5):
        query = query_like(pages[seed * 37], seed)
        exact = store.search(query, k=10)
        fast = store.search(query, k=10, mode="fast", prefetch=50)
        exact_scores = {hit.page: hit.score for hit in exact}
        for hit in fast:
            if hit.page in exact_scores:
                assert abs(hit.score - exact_scores[hit.page]) < 1e-4
        recalls.append(len({h.page for h in fast} & set(exact_scores)) / 10)
    assert np.mean(recalls) >= 0.9, recalls


def test_documents_are_idempotent_deletable_and_filterable(store):
    pages = structured_pages(6, seed=2)
    store.add_document("a", pages[:4], metadata={"lang": "en"})
    store.add_document("a", pages[:4], metadata={"lang": "en"})
    store.add_document("b", pages[4:], metadata={"lang": "de"})
    assert store.page_count() == 6 and store.page_count("a") == 4
    store.add_document("a", pages[:2], metadata={"lang": "en"})  # a shorter new version replaces the old one
    assert store.page_count("a") == 2
    hits = store.search(query_like(pages[0], 0), k=5, filter={"lang": "de"})
    assert {hit.document_id for hit in hits} == {"b"}
    assert store.delete_document("a") == 2 and store.page_count() == 2
    with pytest.raises(InvalidInput, match="k must be"):
        store.search(query_like(pages[0], 0), k=0)
    with pytest.raises(InvalidInput, match="prefetch must be between 1 and 10000, got 0"):
        store.search(query_like(pages[0], 0), k=2, mode="fast", prefetch=0)
    with pytest.raises(InvalidInput, match="expected"):
        store.add_document("c", [np.zeros((3, 64), np.float32)])


def test_cluster_pooling_finds_the_clusters_of_a_page():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((POOLED_ROWS, 128)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rows = centers[np.arange(700) % POOLED_ROWS] + 0.02 * rng.standard_normal((700, 128)).astype(np.float32)
    pooled = cluster_pool(rows)
    assert pooled.shape == (POOLED_ROWS, 128)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-5)
    assert (pooled @ centers.T).max(axis=1).min() > 0.99  # every centroid sits on a planted cluster
    short = rows[:5]
    assert np.array_equal(np.unique(cluster_pool(short), axis=0), np.unique(short, axis=0))  # few rows: kept


INGEST_AND_DIE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tests.index.backends import open_store
    store = open_store(*sys.argv[1:4])
    rng = np.random.default_rng(0)
    def page():
        rows = rng.standard_normal((40, 128)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    store.add_document("finished", [page() for _ in range(3)])
    print("finished", flush=True)
    def slow_pages():
        for number in range(100):
            yield page()
            if number == 4:
                print("half-way", flush=True)
            time.sleep(0.05)
    store.add_document("interrupted", slow_pages())
    """
)


def test_sigkill_mid_ingest_leaves_whole_documents_only(backend, tmp_path):
    where = (backend, str(tmp_path / "collection"), f"pagelens_test_{uuid.uuid4().hex[:12]}")
    command = [sys.executable, "-c", INGEST_AND_DIE, *where]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline().strip() == "finished"
    assert child.stdout.readline().strip() == "half-way"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = open_store(*where)
    try:
        assert store.purged_on_open >= 5, "the interrupted document's pages were not found and purged"
        assert store.page_count() == 3 and store.page_count("finished") == 3
        assert store.page_count("interrupted") == 0
        rng = np.random.default_rng(9)
        query = rng.standard_normal((8, 128)).astype(np.float32)
        assert {hit.document_id for hit in store.search(query, k=10)} == {"finished"}
    finally:
        close_store(store, drop=backend == "qdrant-server")


def test_exact_search_ranks_real_model_pages_as_maxsim_of_their_embeddings(store, tiny_model):
    from pagelens.engine import Engine
    from pagelens.models import Embedder
    from tests.conftest import make_page

    images = [make_page(200 + 40 * i, 260 + 30 * (i % 3), 50 + i) for i in range(8)]
    with Engine(Embedder.load(str(tiny_model), device="cpu", dtype="float32")) as engine:
        pages = engine.embed_images(images)
        queries = engine.embed_queries(["quarterly revenue table", "a chart", "signature page"])
    store.add_document("report", pages)
    for query in queries:
        hits = store.search(query, k=8)
        expected = sorted(range(8), key=lambda i: -maxsim(query, fp16(pages[i])))
        assert [hit.page - 1 for hit in hits] == expected


def test_a_shard_open_elsewhere_is_a_conflict_and_the_holder_keeps_working(tmp_path):
    from pagelens.errors import Conflict
    from pagelens.index.edge_store import EdgePageStore

    holder = EdgePageStore(tmp_path / "store")
    try:
        holder.add_document("d", structured_pages(2, tokens=40))
        with pytest.raises(Conflict, match="is open in another process"):
            EdgePageStore(tmp_path / "store")
        assert holder.page_count() == 2
    finally:
        holder.close()
    reopened = EdgePageStore(tmp_path / "store")  # free again once the holder closed
    assert reopened.page_count() == 2
    reopened.close()
