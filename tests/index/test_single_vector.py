"""Single-vector (Bi*) pages in both stores: one `(dim,)` vector a page, searched by the exact dot
product (`fast` is the same search on Edge), with the same documents, atomicity and filters as
multi-vector pages. Runs on every backend of backends.py."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pagelens.errors import InvalidInput
from pagelens.index.pages import PageSchema, PageStore
from tests.index.backends import close_store, open_store

DIM = 48
SINGLE = PageSchema(DIM, multi_vector=False)


def unit_vectors(count: int, seed: int, dim: int = DIM) -> np.ndarray:
    """`(count, dim)` float32 unit vectors."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fp16(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float16).astype(np.float32)


@pytest.fixture
def where(backend, tmp_path):
    return backend, tmp_path / "collection", f"pagelens_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def single_store(where):
    opened = open_store(*where, schema=SINGLE)
    yield opened
    close_store(opened, drop=where[0] == "qdrant-server")


def located(hit) -> int:
    """A hit's index in the 40 pages of test_exact_search_ranks_as_dot_products."""
    return int(hit.document_id[3:]) * 10 + hit.page - 1


def test_exact_search_ranks_as_dot_products_of_the_stored_vectors(single_store, backend):
    assert isinstance(single_store, PageStore) and single_store.schema == SINGLE
    pages = unit_vectors(40, seed=1)
    for document in range(4):
        vectors = pages[document * 10 : (document + 1) * 10]
        single_store.add_document(f"doc{document}", iter(vectors), name=f"d{document}.pdf", metadata={"n": document})
    assert single_store.page_count() == 40 and single_store.page_count("doc2") == 10
    stored = fp16(pages)  # as the stores keep them
    for seed in range(4):
        query = fp16(unit_vectors(1, seed=100 + seed)[0])  # float16-exact: Qdrant Edge rounds queries so
        scores = stored @ query
        hits = single_store.search(query, k=10)
        assert [located(hit) for hit in hits] == list(np.argsort(-scores, kind="stable")[:10])
        np.testing.assert_allclose([hit.score for hit in hits], np.sort(scores)[::-1][:10], atol=1e-3)
        fast = single_store.search(query, k=10, mode="fast", prefetch=3)
        if backend != "qdrant-server":  # Edge scans in both modes, local mode always scans
            assert [(h.document_id, h.page, h.score) for h in fast] == [(h.document_id, h.page, h.score) for h in hits]
        else:
            assert located(fast[0]) == located(hits[0])
    assert hits[0].name == f"d{hits[0].document_id[3:]}.pdf" and hits[0].metadata == {"n": int(hits[0].document_id[3:])}


def test_documents_are_idempotent_deletable_and_filterable(single_store):
    pages = unit_vectors(6, seed=2)
    single_store.add_document("a", pages[:4], metadata={"lang": "en"})
    single_store.add_document("a", pages[:4], metadata={"lang": "en"})
    single_store.add_document("b", pages[4:], metadata={"lang": "de"})
    assert single_store.page_count() == 6 and single_store.page_count("a") == 4
    single_store.add_document("a", pages[:2], metadata={"lang": "en"})  # a shorter new version replaces the old one
    assert single_store.page_count("a") == 2
    for mode in ("exact", "fast"):
        hits = single_store.search(pages[0], k=5, mode=mode, filter={"lang": "de"})
        assert {(hit.document_id, hit.page) for hit in hits} == {("b", 1), ("b", 2)}
        hits = single_store.search(pages[3], k=10, mode=mode)  # page 4 of the old version is gone
        assert {(hit.document_id, hit.page) for hit in hits} == {("a", 1), ("a", 2), ("b", 1), ("b", 2)}
    assert single_store.delete_document("a") == 2 and single_store.page_count() == 2
    assert {hit.document_id for hit in single_store.search(pages[0], k=10)} == {"b"}


def test_shapes_are_checked_against_the_schema(single_store):
    single_store.add_document("a", unit_vectors(2, seed=3))
    with pytest.raises(InvalidInput, match=rf"page 2 has shape \(1, {DIM}\); expected \({DIM},\)"):
        single_store.add_document("c", [unit_vectors(1, seed=4)[0], unit_vectors(1, seed=4)])
    with pytest.raises(InvalidInput, match=rf"page 1 has shape \(64,\); expected \({DIM},\)"):
        single_store.add_document("d", [np.ones(64, np.float32)])
    with pytest.raises(InvalidInput, match=rf"query embedding has shape \(3, {DIM}\); expected \({DIM},\)"):
        single_store.search(unit_vectors(3, seed=5), k=2)
    with pytest.raises(InvalidInput, match="prefetch must be between"):
        single_store.search(unit_vectors(1, seed=5)[0], k=2, mode="fast", prefetch=0)
    single_store.purge_incomplete()
    assert single_store.page_count() == 2 and single_store.page_count("c") == 0


def test_an_interrupted_ingest_is_invisible_and_purged_on_open(where):
    pages = unit_vectors(5, seed=6)

    def two_pages_then_crash():
        yield from pages[:2]
        raise RuntimeError("killed")

    store = open_store(*where, schema=SINGLE)
    try:
        store.add_document("done", pages[2:])
        with pytest.raises(RuntimeError):
            store.add_document("interrupted", two_pages_then_crash())
        assert store.page_count() == 3 and store.page_count("interrupted") == 0
        assert {hit.document_id for hit in store.search(pages[0], k=10)} == {"done"}
    finally:
        close_store(store)
    reopened = open_store(*where)  # no schema given: the stored one
    try:
        assert reopened.schema == SINGLE and reopened.purged_on_open == 2
        assert reopened.page_count() == 3 and reopened.purge_incomplete() == 0
    finally:
        close_store(reopened, drop=where[0] == "qdrant-server")


def test_an_edge_store_keeps_no_vector_mirror_for_single_vectors(tmp_path):
    from pagelens.index.edge_store import SingleVectorEdgeStore, open_edge_store

    store = open_edge_store(tmp_path / "store", schema=SINGLE)
    try:
        assert isinstance(store, SingleVectorEdgeStore) and store.default_prefetch == 100
        store.add_document("a", unit_vectors(3, seed=7))
        assert sorted(path.name for path in tmp_path.iterdir()) == ["store"]
    finally:
        store.close()
