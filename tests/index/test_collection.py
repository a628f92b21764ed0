"""Collection (index/collections.py) on its own, with a fake embed function and generated PDFs."""

from __future__ import annotations

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
    assert events == [
        ("stored", 0, 20),
        ("embed", 8),
        ("stored", 8, 20),
        ("embed", 8),
        ("stored", 16, 20),
        ("embed", 4),
        ("stored", 20, 20),
    ]
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


def test_a_multi_batch_pdf_is_opened_once_per_ingest_and_once_per_page_image(collection, pdf_opens):
    record = collection.add(make_pdf(20), name="long.pdf", metadata={}, embed=embed, dpi=36)
    assert record["pages"] == 20 and collection.store.page_count() == 20  # three batches of 8, 8 and 4
    assert len(pdf_opens) == 1
    assert collection.page_image(record["id"], 17).size == (180, 150)  # 360 x 300 points at 36 dpi
    assert len(pdf_opens) == 2
