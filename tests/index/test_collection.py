"""Collection (index/collections.py) on its own, with a fake embed function and generated PDFs."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.errors import InvalidInput
from pagelens.index.collections import Collections
from pagelens.testing.fake import FakeBackend
from tests.index.test_pdf import make_pdf

FAKE = FakeBackend(dim=128)


def embed(images):
    return [FAKE.expected(FAKE.prepare_image(image)) for image in images]


@pytest.fixture
def collection(tmp_path):
    collections = Collections(tmp_path / "data")
    yield collections.create("c")
    collections.close()


def test_prefetch_outside_its_bounds_is_invalid_input(collection):
    collection.add(make_pdf(2), name="a.pdf", metadata={}, embed=embed, dpi=36)
    query = FAKE.expected(FAKE.prepare_query("revenue"))
    assert len(collection.search(query, k=2, mode="fast", filter=None, prefetch=1)) == 2  # at least k
    for bad in (0, 10_001):
        with pytest.raises(InvalidInput, match="prefetch must be between 1 and 10000"):
            collection.search(query, k=2, mode="fast", filter=None, prefetch=bad)


def test_add_reports_pages_as_each_batch_is_stored(collection):
    events = []

    def embed_logged(images):
        events.append(("embed", len(images)))
        return embed(images)

    def progress(done, total):
        events.append(("stored", done, total))

    pdf = make_pdf(20)
    record = collection.add(pdf, name="long.pdf", metadata={}, embed=embed_logged, dpi=36, progress=progress)
    assert record["created"] and record["pages"] == 20
    assert [event for event in events if event[0] == "stored"] == [
        ("stored", 0, 20), ("stored", 8, 20), ("stored", 16, 20), ("stored", 20, 20)
    ]  # fmt: skip
    assert [event for event in events if event[0] == "embed"] == [("embed", 8), ("embed", 8), ("embed", 4)]
    for position, event in enumerate(events):  # pages are stored only once embedded (the next batch may embed first)
        if event[0] == "stored":
            assert sum(seen[1] for seen in events[:position] if seen[0] == "embed") >= event[1]
    events.clear()
    assert not collection.add(pdf, name="long.pdf", metadata={}, embed=embed, dpi=36, progress=progress)["created"]
    assert events == [], "an already stored document reports nothing"


def test_a_progress_callback_that_raises_aborts_the_ingest(collection):
    class Stop(Exception):
        pass

    def stop_at_eight(done, total):
        if done == 8:
            raise Stop

    with pytest.raises(Stop):
        collection.add(make_pdf(12), name="a.pdf", metadata={}, embed=embed, dpi=36, progress=stop_at_eight)
    assert collection.documents() == [] and collection.store.page_count() == 0
    assert list(collection.files.iterdir()) == []


def test_a_multi_batch_pdf_is_opened_once_per_ingest_and_once_per_page_image(collection):
    opened = collection.renderer.opened
    record = collection.add(make_pdf(20), name="long.pdf", metadata={}, embed=embed, dpi=36)
    assert record["pages"] == 20 and collection.store.page_count() == 20  # three batches of 8, 8 and 4
    assert collection.renderer.opened == opened + 1
    assert collection.page_image(record["id"], 17).size == (180, 150)  # 360 x 300 points at 36 dpi
    assert collection.renderer.opened == opened + 2


@pytest.fixture
def collections_on(backend, tmp_path):
    """A function opening Collections on `backend` over the same data; each call closes the
    Collections (and client) the previous one opened, as a restarted server would."""
    import uuid

    from qdrant_client import QdrantClient

    from tests.index.backends import server_client

    prefix, opened = f"pagelens_test_{uuid.uuid4().hex[:8]}_", []

    def close_opened() -> None:
        while opened:
            collections, client = opened.pop()
            collections.close()
            if client is not None:
                client.close()

    def open_collections() -> Collections:
        close_opened()
        client = None
        if backend != "edge":
            client = QdrantClient(path=str(tmp_path / "qdrant")) if backend == "qdrant-local" else server_client()
        opened.append((Collections(tmp_path / "data", qdrant=client, prefix=prefix), client))
        return opened[-1][0]

    yield open_collections
    if backend == "qdrant-server":
        collections = open_collections()
        for name in collections.names():
            collections.delete(name)
    close_opened()


BI_FAKE = FakeBackend(dim=40)


def embed_single(images):
    """One unit `(40,)` vector a page (as a Bi* model gives): the mean of the fake model's rows."""
    vectors = [BI_FAKE.expected(BI_FAKE.prepare_image(image)).mean(axis=0) for image in images]
    return [vector / np.linalg.norm(vector) for vector in vectors]


def test_a_single_vector_collection_stores_and_searches_pdf_and_image_pages(collections_on):
    from pagelens.index.binding import ModelBinding
    from pagelens.index.pages import MULTI_VECTOR_128, PageSchema
    from tests.conftest import encode, make_page

    single = PageSchema(40, multi_vector=False)
    collections = collections_on()
    collection = collections.create("bi", ModelBinding("fake/bi", None, "fake", multi_vector=False, dim=40))
    assert collection.schema == single and collections.create("col").schema == MULTI_VECTOR_128
    pdf = collection.add(make_pdf(3), name="three.pdf", metadata={"kind": "pdf"}, embed=embed_single, dpi=36)
    scan = encode(make_page(120, 90, 5))
    image = collection.add(scan, name="scan.png", metadata={"kind": "scan"}, embed=embed_single)
    assert (pdf["pages"], image["pages"]) == (3, 1) and collection.store.page_count() == 4
    for page in (1, 2, 3):
        (query,) = embed_single([collection.page_image(pdf["id"], page)])
        for mode in ("exact", "fast"):
            hits = collection.search(query, k=4, mode=mode, filter=None)
            assert len(hits) == 4 and (hits[0].document_id, hits[0].page) == (pdf["id"], page)
            assert abs(hits[0].score - 1.0) < 2e-3 and hits[0].name == "three.pdf"
    (query,) = embed_single([collection.page_image(image["id"], 1)])
    hits = collection.search(query, k=4, mode="exact", filter={"kind": "scan"})
    assert [(hit.document_id, hit.page, hit.metadata) for hit in hits] == [(image["id"], 1, {"kind": "scan"})]
    with pytest.raises(InvalidInput, match=r"has shape \(3, 40\); expected \(40,\)"):
        collection.search(np.ones((3, 40), np.float32), k=2, mode="exact", filter=None)
    with pytest.raises(InvalidInput, match=r"page 1 has shape \(2, 128\); expected \(40,\) \(single-vector pages\)"):
        collection.add(make_pdf(2), name="col.pdf", metadata={}, embed=embed, dpi=36)  # a Col* model's pages
    assert len(collection.documents()) == 2
    collection.delete(pdf["id"])
    assert collection.store.page_count() == 1
    reopened = collections_on().get("bi")  # the schema comes from the store
    assert reopened.schema == single and reopened.search(query, k=2, mode="exact", filter=None)[0].page == 1
    assert collections_on().get("col").schema == MULTI_VECTOR_128


def test_search_without_prefetch_uses_the_store_default(collection, monkeypatch):
    from pagelens.index.edge_shard import EDGE_DEFAULT_PREFETCH
    from pagelens.index.pages import PageStore
    from pagelens.index.qdrant_store import QDRANT_DEFAULT_PREFETCH, QdrantPageStore

    assert isinstance(collection.store, PageStore) and collection.store.default_prefetch == EDGE_DEFAULT_PREFETCH == 100
    assert QdrantPageStore.default_prefetch == QDRANT_DEFAULT_PREFETCH == 200
    seen = []
    monkeypatch.setattr(collection.store, "search", lambda query, **options: seen.append(options) or [])
    collection.search(np.ones((2, 128), np.float32), k=3, mode="fast", filter=None)
    assert seen == [{"k": 3, "mode": "fast", "filter": None, "prefetch": EDGE_DEFAULT_PREFETCH}]
