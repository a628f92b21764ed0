"""What only the Qdrant server store has: the collection schema it creates, owner-scoped purges
(two pagelens servers sharing one Qdrant), and typed errors when the server is missing or the
collection gone. Runs on qdrant-client's local mode and on a real server when one is configured."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pagelens.errors import BackendFailure, NotFound
from pagelens.index.qdrant_store import QdrantPageStore
from pagelens.testing.servers import free_port
from tests.index.backends import backend_params, server_client
from tests.index.test_store import structured_pages


@pytest.fixture(params=[param for param in backend_params() if param != "edge"])
def client(request, tmp_path):
    from qdrant_client import QdrantClient

    opened = QdrantClient(path=str(tmp_path / "qdrant")) if request.param == "qdrant-local" else server_client()
    created: list[str] = []
    yield opened, created
    for name in created:
        if opened.collection_exists(name):
            opened.delete_collection(name)
    opened.close()


def fresh_name(created: list[str]) -> str:
    created.append(f"pagelens_test_{uuid.uuid4().hex[:12]}")
    return created[-1]


def test_collection_schema_is_exact_float16_maxsim(client):
    qdrant, created = client
    from qdrant_client import models

    name = fresh_name(created)
    QdrantPageStore(qdrant, name)
    vectors = qdrant.get_collection(name).config.params.vectors
    assert set(vectors) == {"page", "pooled"}
    for params in vectors.values():
        assert params.size == 128 and params.distance == models.Distance.DOT
        assert params.multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
        assert params.datatype == models.Datatype.FLOAT16 and params.hnsw_config.m == 0


def test_a_single_vector_collection_is_one_float16_dot_vector_with_hnsw_for_fast_mode(client):
    qdrant, created = client
    from qdrant_client import models

    from pagelens.index.pages import PageSchema

    name = fresh_name(created)
    store = QdrantPageStore(qdrant, name, schema=PageSchema(2560, multi_vector=False))
    vectors = qdrant.get_collection(name).config.params.vectors
    assert set(vectors) == {"page"} and vectors["page"].size == 2560 and vectors["page"].multivector_config is None
    assert vectors["page"].distance == models.Distance.DOT and vectors["page"].datatype == models.Datatype.FLOAT16
    assert vectors["page"].hnsw_config is None  # the collection's graph: fast mode searches it
    assert QdrantPageStore(qdrant, name).schema == store.schema  # read back from the vector params


def test_a_store_purges_only_its_own_unfinished_ingests(client):
    qdrant, created = client
    name = fresh_name(created)
    pages = structured_pages(5, seed=4)
    mine, theirs = QdrantPageStore(qdrant, name, owner="me"), QdrantPageStore(qdrant, name, owner="them")

    def two_pages_then_crash():
        yield from pages[:2]
        raise RuntimeError("killed")

    for store, document in ((mine, "mine"), (theirs, "theirs")):
        with pytest.raises(RuntimeError):
            store.add_document(document, two_pages_then_crash())
    mine.add_document("done", pages)
    assert mine.page_count() == 5, "unfinished pages must not be counted"
    assert QdrantPageStore(qdrant, name, owner="me").purged_on_open == 2  # reopening "me" leaves "them" alone
    assert QdrantPageStore(qdrant, name, owner="them").purged_on_open == 2
    assert mine.page_count() == 5 and {hit.document_id for hit in mine.search(pages[0][:4], k=10)} == {"done"}


def test_a_vanished_collection_is_not_found(client):
    qdrant, created = client
    name = fresh_name(created)
    store = QdrantPageStore(qdrant, name)
    qdrant.delete_collection(name)
    with pytest.raises(NotFound, match=name):
        store.search(np.ones((2, 128), np.float32), k=3)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_an_unreachable_server_is_a_backend_failure_naming_it():
    from qdrant_client import QdrantClient

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendFailure, match=f"cannot reach Qdrant at {url}"):
        QdrantPageStore(QdrantClient(url=url, timeout=2), "pagelens_x")


def test_pages_written_in_any_order_show_only_once_marked_complete_and_stale_ones_go(client):
    qdrant, created = client
    name = fresh_name(created)
    pages = structured_pages(4, seed=6)
    store = QdrantPageStore(qdrant, name, owner="fanout")
    assert store.write_pages("doc", [(3, pages[2]), (4, pages[3])], name="d.pdf", metadata={"k": 1}) == 2
    assert store.write_pages("doc", [(1, pages[0]), (2, pages[1])]) == 2  # another batch, later
    assert store.write_pages("doc", []) == 0
    assert store.stored_pages("doc") == 4 and store.page_count() == 0 and store.search(pages[0][:4], k=5) == []
    store.mark_complete("doc", 3)  # a shorter version: page 4 is stale
    assert store.page_count("doc") == 3 and store.stored_pages("doc") == 3
    hit = store.search(pages[2][:5], k=1)[0]
    assert (hit.page, hit.name, hit.metadata) == (3, "d.pdf", {"k": 1})


def test_discarding_a_document_leaves_complete_pages_and_other_owners_alone(client):
    qdrant, created = client
    name = fresh_name(created)
    pages = structured_pages(4, seed=7)
    mine, theirs = QdrantPageStore(qdrant, name, owner="me"), QdrantPageStore(qdrant, name, owner="them")
    mine.write_pages("doc", [(1, pages[0]), (2, pages[1])])
    theirs.write_pages("doc", [(3, pages[2])])
    mine.add_document("done", pages[:2])
    assert mine.discard_incomplete("doc") == 2
    assert mine.stored_pages("doc") == 1 and mine.page_count("done") == 2
    assert theirs.discard_incomplete("doc") == 1 and mine.discard_incomplete("done") == 0
