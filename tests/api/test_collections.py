"""Collections over HTTP (in-process, fake 128-d model): create, upload PDFs and images, list,
page images, search, delete, and the bad inputs of issue #5."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pagelens.api import create_app
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_service
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf


@pytest.fixture
def client(tmp_path):
    service = fake_service(FakeBackend(dim=128))
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    with TestClient(create_app(settings, service=service), headers=AUTH) as test_client:
        yield test_client
    service.engine.close()


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
    assert again.json() == {**first.json(), "created": False}
    picture = upload(client, "reports", encode(make_page(120, 160, 3)), name="scan.png", metadata={"year": 2024})
    assert picture.json()["pages"] == 1
    listing = client.get("/collections/reports/documents").json()["documents"]
    assert sorted(doc["pages"] for doc in listing) == [1, 5]
    assert client.get("/collections").json()["collections"] == [{"name": "reports", "documents": 2, "pages": 6}]

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
    assert client.post("/collections/c/search", json={"query": "q", "k": 0}).status_code == 400
    unknown = client.post("/collections/c/search", json={"query": "q", "filter": {"colour": "red"}})
    assert unknown.status_code == 400 and "'colour'" in unknown.json()["error"]["message"]
    assert client.post("/collections/c/search", json={"query": "q", "mode": "fuzzy"}).status_code == 400


def test_a_failing_embed_mid_document_stores_nothing(tmp_path):
    from pagelens.errors import BackendFailure
    from pagelens.index.collections import Collections

    calls = []

    def embed_then_fail(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise BackendFailure("out of memory even when embedded alone")
        return [FakeBackend(dim=128).expected(FakeBackend(dim=128).prepare_image(image)) for image in images]

    collections = Collections(tmp_path / "data")
    collection = collections.create("c")
    with pytest.raises(BackendFailure):
        collection.add(make_pdf(12), name="big.pdf", metadata={}, embed=embed_then_fail, dpi=36)
    assert calls == [8, 4]
    assert collection.documents() == [] and collection.store.page_count() == 0
    assert list((tmp_path / "data" / "c" / "files").iterdir()) == []
    collections.close()
