"""Collections over HTTP (in-process, fake 128-d model): create, upload PDFs and images, list,
page images, search, delete, and the bad inputs of issue #5; on Qdrant Edge and on the Qdrant
server store (qdrant-client's local mode), plus what a server backend adds: an unreachable server,
and two pagelens data directories sharing one Qdrant."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pagelens.api import create_app
from pagelens.index.collections import Collections
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf


def open_collections(backend: str, tmp_path) -> Collections:
    """Collections under tmp_path/data, on Edge or on a local-mode Qdrant in tmp_path/qdrant."""
    if backend == "edge":
        return Collections(tmp_path / "data")
    from qdrant_client import QdrantClient

    return Collections(tmp_path / "data", qdrant=QdrantClient(path=str(tmp_path / "qdrant")))


def close_collections(collections: Collections) -> None:
    collections.close()
    if collections.qdrant is not None:
        collections.qdrant.close()


@pytest.fixture(params=["edge", "qdrant-local"])
def client(request, tmp_path):
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    collections = open_collections(request.param, tmp_path)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as test_client:
        yield test_client
    runtime.close()
    close_collections(collections)


def upload(client, collection, data, name="doc.pdf", metadata=None):
    files = {"file": (name, data, "application/octet-stream")}
    form = {"metadata": json.dumps(metadata)} if metadata is not None else {}
    return client.post(f"/collections/{collection}/documents", files=files, data=form)


def test_collection_lifecycle_upload_search_and_pages(client):
    assert client.post("/collections", json={"name": "reports"}).status_code == 201
    assert client.post("/collections", json={"name": "reports"}).status_code == 409
    pdf = make_pdf(5)
    first = upload(client, "reports", pdf, metadata={"year": 2023})
    assert first.status_code == 200 and first.json()["pages"] == 5 and first.json()["created"]
    again = upload(client, "reports", pdf, metadata={"year": 2023})
    assert first.json()["metadata_kept"] is False
    assert again.json() == {**first.json(), "created": False, "metadata_kept": True}
    picture = upload(client, "reports", encode(make_page(120, 160, 3)), name="scan.png", metadata={"year": 2024})
    assert picture.json()["pages"] == 1
    listing = client.get("/collections/reports/documents").json()["documents"]
    assert sorted(doc["pages"] for doc in listing) == [1, 5]
    (listed,) = client.get("/collections").json()["collections"]
    assert {key: listed[key] for key in ("name", "documents", "pages")} == {
        "name": "reports",
        "documents": 2,
        "pages": 6,
    }
    assert listed["model"]["model"] == "fake/model" and listed["compatible"] is True

    results = client.post("/collections/reports/search", json={"query": "revenue", "k": 3}).json()["results"]
    assert len(results) == 3 and results[0]["score"] >= results[-1]["score"]
    only_2024 = client.post(
        "/collections/reports/search", json={"query": "revenue", "k": 10, "filter": {"year": 2024}}
    ).json()["results"]
    assert [(r["page"], r["metadata"]["year"]) for r in only_2024] == [(1, 2024)]
    fast = client.post("/collections/reports/search", json={"query": "revenue", "k": 3, "mode": "fast"})
    assert fast.status_code == 200 and len(fast.json()["results"]) == 3

    document_id = first.json()["id"]
    page = client.get(f"/collections/reports/documents/{document_id}/pages/4")
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(page.content)).size == (230, 300)
    assert client.get(f"/collections/reports/documents/{document_id}/pages/6").status_code == 404
    assert client.delete(f"/collections/reports/documents/{document_id}").status_code == 200
    assert client.get("/collections/reports").json()["pages"] == 1
    assert client.delete("/collections/reports").status_code == 200
    assert client.get("/collections/reports").status_code == 404


def test_bad_uploads_and_requests(client):
    from pypdf import PdfReader, PdfWriter

    client.post("/collections", json={"name": "c"})
    assert upload(client, "c", b"PK\x03\x04 zip").status_code == 415
    corrupt = upload(client, "c", b"%PDF-1.7 broken")
    assert corrupt.status_code == 422 and "corrupt" in corrupt.json()["error"]["message"]
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(1))))
    writer.encrypt("pw")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    locked = upload(client, "c", encrypted.getvalue())
    assert locked.status_code == 422 and "encrypted" in locked.json()["error"]["message"]
    assert upload(client, "c", make_pdf(1), metadata=None).status_code == 200
    bad_meta = client.post(
        "/collections/c/documents", files={"file": ("x.pdf", make_pdf(1))}, data={"metadata": "{not json"}
    )
    assert bad_meta.status_code == 400
    assert client.get("/collections/c").json()["documents"] == 1, "a failed upload stored something"
    assert upload(client, "missing", make_pdf(1)).status_code == 404
    assert client.post("/collections", json={"name": "../escape"}).status_code == 400
    for name in ("abc\n", "abc\r\n", "\nabc", "a" * 65):
        refused = client.post("/collections", json={"name": name})
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_input", repr(name)
    assert client.get("/collections/abc%0A").status_code == 400
    assert client.post("/collections/c/search", json={"query": "q", "k": 0}).status_code == 400
    unknown = client.post("/collections/c/search", json={"query": "q", "filter": {"colour": "red"}})
    assert unknown.status_code == 400 and "'colour'" in unknown.json()["error"]["message"]
    assert client.post("/collections/c/search", json={"query": "q", "mode": "fuzzy"}).status_code == 400


def test_fast_search_takes_prefetch_and_rescores_exactly(client):
    client.post("/collections", json={"name": "c"})
    upload(client, "c", make_pdf(6))
    upload(client, "c", encode(make_page(120, 160, 3)), name="scan.png")
    collections = client.app.state.runtime.collections
    collections.recall_sampler.rate = 0.0  # its background exact re-runs would call the spy too
    store = collections.index().get("c").store
    asked, search = [], store.search

    def spy(*args, **kwargs):
        asked.append(kwargs.get("prefetch"))
        return search(*args, **kwargs)

    store.search = spy

    def results(**body):
        response = client.post("/collections/c/search", json={"query": "revenue", **body})
        assert response.status_code == 200, response.text
        return [(r["document_id"], r["page"], r["score"]) for r in response.json()["results"]]

    exact = results(k=5, prefetch=1)  # exact mode ignores prefetch
    fast = results(k=5, mode="fast", prefetch=50)  # every page is a candidate
    assert [hit[:2] for hit in fast] == [hit[:2] for hit in exact]
    assert [hit[2] for hit in fast] == pytest.approx([hit[2] for hit in exact], rel=1e-6)
    assert len(results(k=3, mode="fast", prefetch=1)) == 3, "the store prefetches at least k"
    assert len(results(k=3, mode="fast")) == 3
    assert asked == [1, 50, 1, store.default_prefetch]  # none asked: the store's own default
    for bad in (0, 10_001, "many"):
        response = client.post("/collections/c/search", json={"query": "q", "mode": "fast", "prefetch": bad})
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_input"
        assert response.json()["error"]["message"].startswith("prefetch: ")


@pytest.mark.parametrize("backend", ["edge", "qdrant-local"])
def test_a_failing_embed_mid_document_stores_nothing(backend, tmp_path):
    from pagelens.errors import BackendFailure

    calls = []

    def embed_then_fail(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise BackendFailure("out of memory even when embedded alone")
        return [FakeBackend(dim=128).expected(FakeBackend(dim=128).prepare_image(image)) for image in images]

    collections = open_collections(backend, tmp_path)
    collection = collections.create("c")
    with pytest.raises(BackendFailure):
        collection.add(make_pdf(12), name="big.pdf", metadata={}, embed=embed_then_fail, dpi=36)
    assert calls == [8, 4]
    assert collection.documents() == [] and collection.store.page_count() == 0
    assert collection.files.is_relative_to(tmp_path / "data") and list(collection.files.iterdir()) == []
    close_collections(collections)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_an_unreachable_qdrant_server_is_a_500_naming_it(tmp_path):
    from pagelens.testing.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), qdrant_url=url)
    service = fake_runtime(FakeBackend(dim=128), settings=settings)
    with TestClient(create_app(runtime=service), headers=AUTH) as test_client:
        for response in (test_client.post("/collections", json={"name": "c"}), test_client.get("/collections")):
            assert response.status_code == 500
            assert response.json()["error"]["type"] == "backend_failure"
            assert f"cannot reach Qdrant at {url}" in response.json()["error"]["message"]
    service.engine.close()
    assert not (tmp_path / "data" / "c").exists()


def test_two_data_directories_sharing_one_qdrant(tmp_path):
    from qdrant_client import QdrantClient

    from pagelens.errors import Conflict, InvalidInput, NotFound

    fake = FakeBackend(dim=128)

    def embed(images):
        return [fake.expected(fake.prepare_image(image)) for image in images]

    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    first, second = Collections(tmp_path / "a", qdrant=qdrant), Collections(tmp_path / "b", qdrant=qdrant)
    first.create("shared")
    assert [c.name for c in qdrant.get_collections().collections] == ["pagelens_shared"]
    assert second.names() == ["shared"]
    with pytest.raises(Conflict):
        second.create("shared")
    pdf, scan = make_pdf(3), encode(make_page(120, 160, 5))
    assert first.get("shared").add(pdf, name="a.pdf", metadata={}, embed=embed, dpi=36)["created"]
    assert second.get("shared").add(pdf, name="b.pdf", metadata={}, embed=embed, dpi=36)["created"]  # no local copy yet
    second.get("shared").add(scan, name="scan.png", metadata={"by": "b"}, embed=embed, dpi=36)
    query = embed([make_page(120, 160, 5)])[0][:4]
    hits = first.get("shared").search(query, k=10, mode="exact", filter=None)
    assert len(hits) == 4 and hits[0].name == "scan.png", "pages stored through b are searchable through a"
    assert [doc["name"] for doc in first.get("shared").documents()] == ["a.pdf"], "files stay local"
    by_b = first.get("shared").search(query, k=10, mode="fast", filter={"by": "b"})  # a field only b's records have
    assert [(hit.name, hit.page) for hit in by_b] == [("scan.png", 1)]
    with pytest.raises(InvalidInput, match="'colour'"):
        first.get("shared").search(query, k=10, mode="exact", filter={"colour": "red"})
    assert first.get("shared").store.page_count() == second.get("shared").store.page_count() == 4
    first.delete("shared")
    assert second.names() == [] and not (tmp_path / "a" / "_qdrant" / "shared").exists()
    with pytest.raises(NotFound):
        second.get("shared").search(query, k=3, mode="exact", filter=None)
    first.close()
    second.close()
    qdrant.close()
