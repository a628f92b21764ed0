"""Metadata filters and metadata changes in each page store (tests/index/backends.py): equality,
`$in`, numeric and date ranges, ANDed, against documents whose metadata lacks the field or holds
it with another type; `set_metadata` replaces every page's copy, durably."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.index.pages import PageSchema
from tests.index.backends import close_store, open_store
from tests.index.test_store import query_like, structured_pages

DOCUMENTS = {
    "d0": {"team": "finance", "year": 2020, "date": "2024-01-15", "draft": True, "tags": ["a", "b"], "score": 0.5},
    "d1": {"team": "legal", "year": 2022, "date": "2024-03-01T12:00:00Z", "draft": False, "tags": ["c"], "score": 1.5},
    "d2": {"team": "finance", "year": "2021", "date": "2024-02-10T09:00:00+02:00", "draft": 1},  # other types
    "d3": {},  # no field at all
    "d4": {"team": 7, "year": 2023.5, "date": 20240101, "draft": "true"},
}
CASES = [
    ({"team": "finance"}, {"d0", "d2"}),
    ({"team": 7}, {"d4"}),
    ({"team": {"$in": ["finance", "legal"]}}, {"d0", "d1", "d2"}),
    ({"team": {"$in": [7, 8]}}, {"d4"}),
    ({"draft": True}, {"d0"}),  # not the integer 1, nor the string "true"
    ({"draft": False}, {"d1"}),
    ({"draft": {"$in": [True, False]}}, {"d0", "d1"}),
    ({"draft": 1}, {"d2"}),
    ({"year": {"$gte": 2021}}, {"d1", "d4"}),  # not the string "2021"
    ({"year": {"$gt": 2020, "$lt": 2023}}, {"d1"}),
    ({"year": {"$lte": 2020}}, {"d0"}),
    ({"score": {"$gte": 0.5, "$lte": 0.5}}, {"d0"}),
    ({"date": {"$gte": "2024-02-01"}}, {"d1", "d2"}),  # not the number 20240101
    ({"date": {"$lt": "2024-02-10T08:00:00Z"}}, {"d0", "d2"}),  # d2 is 07:00 UTC
    ({"date": {"$lt": "2024-02-10T07:00:00Z"}}, {"d0"}),
    ({"date": {"$lte": "2024-02-10T09:00:00+02:00"}}, {"d0", "d2"}),
    ({"date": {"$gt": "2024-01-15", "$lte": "2024-03-01 12:00"}}, {"d1", "d2"}),
    ({"date": {"$gte": "0001-01-01", "$lt": "9999-12-31T23:59:59.999999Z"}}, {"d0", "d1", "d2"}),
    ({"tags": "b"}, {"d0"}),  # a list matches when one of its items does
    ({"tags": {"$in": ["c", "z"]}}, {"d1"}),
    ({"team": "finance", "year": {"$lt": 2021}}, {"d0"}),  # ANDed
    ({"team": "finance", "draft": False}, set()),
    ({"year": {"$in": [2020, 2022], "$gt": 2020}}, {"d1"}),  # operators on one field ANDed too
    ({"missing": {"$in": ["x"]}}, set()),
]


@pytest.mark.parametrize("kind", ["multi-vector", "single-vector"])
def test_each_filter_operator_matches_by_type(backend, kind, tmp_path):
    """Every case of CASES, in both modes, on a store of each schema holding DOCUMENTS (a page each)."""
    schema = PageSchema(128) if kind == "multi-vector" else PageSchema(64, multi_vector=False)
    store = open_store(backend, tmp_path / "collection", f"pagelens_test_filters_{kind}", schema=schema)
    pages = structured_pages(len(DOCUMENTS), seed=5)
    try:
        for (document_id, metadata), page in zip(DOCUMENTS.items(), pages, strict=True):
            store.add_document(document_id, [page if schema.multi_vector else page[0, :64]], metadata=metadata)
        query = query_like(pages[0], 0) if schema.multi_vector else pages[0][0, :64]
        for filter, expected in CASES:
            for mode in ("exact", "fast"):
                hits = store.search(query, k=10, mode=mode, filter=filter)
                assert {hit.document_id for hit in hits} == expected, (filter, mode)
                assert all(hit.metadata == DOCUMENTS[hit.document_id] for hit in hits)
            if getattr(store, "vectors_in_shard", False):  # the Edge mirror's results, checked by Qdrant Edge's own
                assert {hit.document_id for hit in store.qdrant_search(query, k=10, filter=filter)} == expected, filter
    finally:
        close_store(store, drop=backend == "qdrant-server")


def test_set_metadata_replaces_every_pages_copy_durably(backend, tmp_path):
    pages = structured_pages(5, seed=6)
    store = open_store(backend, tmp_path / "collection", "pagelens_test_set_metadata")
    store.add_document("a", pages[:3], name="a.pdf", metadata={"team": "x", "year": 2020})
    store.add_document("b", pages[3:], name="b.pdf", metadata={"team": "x"})
    assert store.set_metadata("a", {"team": "y", "since": "2024-05-01"}) == 3
    assert store.set_metadata("nothing", {"team": "z"}) == 0
    query = query_like(pages[0], 0)
    moved = store.search(query, k=10, filter={"team": "y"})
    assert sorted(hit.page for hit in moved) == [1, 2, 3]
    assert all(hit.metadata == {"team": "y", "since": "2024-05-01"} and hit.name == "a.pdf" for hit in moved)
    assert {hit.document_id for hit in store.search(query, k=10, filter={"team": "x"})} == {"b"}
    assert store.search(query, k=10, filter={"year": {"$gte": 0}}) == []
    close_store(store)

    store = open_store(backend, tmp_path / "collection", "pagelens_test_set_metadata")  # what a restart sees
    try:
        assert store.page_count() == 5, "the metadata change kept every page (and, on Edge, its mirror rows)"
        after = store.search(query, k=10, filter={"since": {"$gte": "2024-05-01T00:00:00Z"}})
        assert sorted(hit.page for hit in after) == [1, 2, 3]
        assert np.isclose(after[0].score, moved[0].score, rtol=1e-5)
    finally:
        close_store(store, drop=backend == "qdrant-server")
