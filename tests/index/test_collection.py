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
