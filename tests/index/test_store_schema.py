"""A store is self-describing: the schema it was created with is read back when it opens, stores
written before schemas existed open as MULTI_VECTOR_128, and asking for another schema than the
stored one is a Conflict naming the store and both schemas."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pagelens.errors import Conflict, InvalidInput
from pagelens.index.pages import MULTI_VECTOR_128, PageSchema, PageStore
from tests.index.backends import close_store, open_store
from tests.index.test_store import query_like, structured_pages

SINGLE = PageSchema(24, multi_vector=False)


@pytest.fixture
def where(backend, tmp_path):
    return backend, tmp_path / "collection", f"pagelens_test_{uuid.uuid4().hex[:12]}"


def reopen(where, schema=None):
    """Open the store at `where` and close it again; its schema."""
    store = open_store(*where, schema=schema)
    try:
        return store.schema
    finally:
        close_store(store)


@pytest.mark.parametrize("schema", [SINGLE, MULTI_VECTOR_128], ids=["single", "multi"])
def test_the_schema_is_kept_across_reopening(where, schema):
    try:
        assert reopen(where, schema) == schema  # created
        assert reopen(where) == schema and reopen(where, schema) == schema
        other = MULTI_VECTOR_128 if schema == SINGLE else SINGLE
        for contradicting in (other, PageSchema(32, multi_vector=False)):
            with pytest.raises(Conflict) as raised:
                open_store(*where, schema=contradicting)
            message = str(raised.value)
            assert str(schema) in message and str(contradicting) in message, message
            assert str(where[1]) in message or where[2] in message, message  # names the store
        assert reopen(where) == schema  # a refused open changed nothing
    finally:
        if where[0] == "qdrant-server":
            close_store(open_store(*where), drop=True)


def test_a_store_written_before_schemas_opens_as_multi_vector(where):
    """Stores of earlier versions have no record of a schema but their vector config (a 128-wide
    multi-vector `page` and `pooled`), written here as those versions wrote it."""
    backend, directory, collection = where
    if backend == "edge":
        import qdrant_edge as q

        params = q.EdgeVectorParams(
            size=128,
            distance=q.Distance.Dot,
            multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
            datatype=q.VectorStorageDatatype.Float16,
            hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        )
        q.EdgeShard.create(str(directory), q.EdgeConfig(vectors={"page": params, "pooled": params})).close()
    else:
        from qdrant_client import QdrantClient, models

        from tests.index.backends import server_client

        client = QdrantClient(path=str(directory)) if backend == "qdrant-local" else server_client()
        params = models.VectorParams(
            size=128,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            datatype=models.Datatype.FLOAT16,
            hnsw_config=models.HnswConfigDiff(m=0),
        )
        client.create_collection(collection, vectors_config={"page": params, "pooled": params})
        client.close()
    store = open_store(*where)
    try:
        assert store.schema == MULTI_VECTOR_128 and isinstance(store, PageStore)
        pages = structured_pages(4, seed=3)
        store.add_document("d", pages)
        assert store.search(query_like(pages[2], 0), k=1)[0].page == 3
    finally:
        close_store(store)
    with pytest.raises(Conflict, match=r"holds multi-vector \(n_tokens, 128\) pages"):
        open_store(*where, schema=SINGLE)
    close_store(open_store(*where, schema=MULTI_VECTOR_128), drop=backend == "qdrant-server")


def test_a_multi_vector_store_names_its_shape_in_errors(where):
    store = open_store(*where)
    try:
        assert store.schema == MULTI_VECTOR_128
        with pytest.raises(InvalidInput, match=r"page 1 has shape \(64,\); expected \(n_tokens, 128\)"):
            store.add_document("bi", [np.ones(64, np.float32)])
        with pytest.raises(InvalidInput, match=r"query embedding has shape \(128,\); expected \(n_tokens, 128\)"):
            store.search(np.ones(128, np.float32), k=1)
    finally:
        close_store(store, drop=where[0] == "qdrant-server")


def test_schemas_name_their_shapes_and_stores_hold_128_wide_multi_vectors(where):
    assert str(MULTI_VECTOR_128) == "multi-vector (n_tokens, 128)"
    assert str(PageSchema(2560, multi_vector=False)) == "single-vector (2560,)"
    assert PageSchema(np.int64(2560), multi_vector=np.bool_(False)) == PageSchema(2560, multi_vector=False)
    with pytest.raises(InvalidInput, match="positive integer"):
        PageSchema(0, multi_vector=False)
    with pytest.raises(InvalidInput, match=r"for multi-vector \(n_tokens, 320\) pages: multi-vector pages are stored"):
        open_store(*where, schema=PageSchema(320))  # ColQwen3's width


def test_the_edge_store_classes_serve_one_kind_of_page_each(tmp_path):
    from pagelens.index.edge_store import EdgePageStore, SingleVectorEdgeStore, open_edge_store

    open_edge_store(tmp_path / "bi", schema=SINGLE).close()
    with pytest.raises(Conflict, match="EdgePageStore does not serve"):
        EdgePageStore(tmp_path / "bi")
    with pytest.raises(Conflict, match="SingleVectorEdgeStore does not serve"):
        SingleVectorEdgeStore(tmp_path / "col")
    assert not (tmp_path / "col").exists()
    store = open_edge_store(tmp_path / "bi")
    assert isinstance(store, SingleVectorEdgeStore) and store.schema == SINGLE
    store.close()
