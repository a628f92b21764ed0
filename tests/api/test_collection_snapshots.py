"""Collection snapshots over HTTP (in-process, fake 128-d model), on Qdrant Edge and qdrant-client's
local mode: `GET /collections/{c}/export` streams a tar, `POST /collections/import` creates the
same collection from it under another name; taken names, bad archives and bodies over the upload
limit are refused with nothing created; neither route needs a model."""

from __future__ import annotations

import io
import tarfile

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.api.test_collections import close_collections, open_collections, upload
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf

TAR = "application/x-tar"


@pytest.fixture(params=["edge", "qdrant-local"])
def backend_name(request) -> str:
    return request.param


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=72)


@pytest.fixture
def client(backend_name, settings, tmp_path):
    collections = open_collections(backend_name, tmp_path)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as test_client:
        yield test_client
    runtime.close()
    close_collections(collections)


def fill(client) -> None:
    assert client.post("/collections", json={"name": "reports"}).status_code == 201
    assert upload(client, "reports", make_pdf(3), metadata={"year": 2023}).status_code == 200
    for seed in (1, 2):
        scan = encode(make_page(150, 200, seed))
        assert upload(client, "reports", scan, name=f"s{seed}.png", metadata={"year": 2020 + seed}).status_code == 200


def results(client, name: str, query: str, **options) -> list[tuple]:
    response = client.post(f"/collections/{name}/search", json={"query": query, "k": 10, **options})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    return [(h["document_id"], h["page"], h["name"], h["metadata"], round(h["score"], 3)) for h in hits]


def test_a_collection_exported_and_imported_over_http_searches_and_serves_as_the_original(client):
    fill(client)
    exported = client.get("/collections/reports/export")
    assert exported.status_code == 200 and exported.headers["content-type"] == TAR
    assert exported.headers["content-disposition"] == "attachment; filename*=UTF-8''reports.tar"
    with tarfile.open(fileobj=io.BytesIO(exported.content)) as archive:
        names = archive.getnames()
    # 3 documents (record, file, patch layouts each), 5 pages
    assert names[0] == "pagelens-collection.json" and len(names) == 1 + 3 * 3 + 5

    imported = client.post("/collections/import", params={"name": "copy"}, content=exported.content,
                           headers={"Content-Type": TAR})  # fmt: skip
    assert imported.status_code == 201, imported.text
    original = client.get("/collections/reports").json()
    assert imported.json() == original | {"name": "copy"}
    for query in ("revenue", "a chart of sales"):
        for options in ({}, {"mode": "fast"}, {"filter": {"year": {"$gte": 2022}}}):
            assert results(client, "copy", query, **options) == results(client, "reports", query, **options)
    documents = client.get("/collections/reports/documents").json()["documents"]
    assert client.get("/collections/copy/documents").json()["documents"] == documents
    for document in documents:
        for path in ("/file", "/pages/1"):
            copied = client.get(f"/collections/copy/documents/{document['id']}{path}")
            assert copied.content == client.get(f"/collections/reports/documents/{document['id']}{path}").content

    again = client.post("/collections/import", content=exported.content)  # under its own name: taken
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"
    assert sorted(c["name"] for c in client.get("/collections").json()["collections"]) == ["copy", "reports"]


def test_bad_imports_are_refused_and_create_nothing(client, tmp_path):
    fill(client)
    archive = client.get("/collections/reports/export").content
    before = client.get("/collections").json()
    for body, status, error_type, message in (
        (b"%PDF-1.7 not an archive" * 100, 422, "unprocessable_document", "not a tar archive"),
        (archive[: len(archive) // 2], 422, "unprocessable_document", "truncated"),
        (archive, 400, "invalid_input", "collection name"),
    ):
        response = client.post("/collections/import", params={"name": "-bad" if status == 400 else "copy"},
                               content=body)  # fmt: skip
        assert response.status_code == status, response.text
        assert response.json()["error"]["type"] == error_type and message in response.json()["error"]["message"]
    assert client.get("/collections").json() == before
    data = tmp_path / "data"
    assert not [path for path in data.rglob(".importing-*")], "no build or spooled upload is left"
    missing = client.get("/collections/nope/export")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert client.get("/collections/-bad/export").status_code == 400


def test_an_import_over_the_upload_limit_is_413_and_creates_nothing(backend_name, settings, tmp_path):
    collections = open_collections(backend_name, tmp_path)
    limited = settings.model_copy(update={"max_document_bytes": 120_000})
    runtime = fake_runtime(FakeBackend(dim=128), settings=limited, collections=collections)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
        fill(client)
        archive = client.get("/collections/reports/export").content
        assert len(archive) > 120_000
        response = client.post("/collections/import", params={"name": "copy"}, content=archive)
        assert response.status_code == 413, response.text
        assert "collection import (PAGELENS_MAX_DOCUMENT_BYTES)" in response.json()["error"]["message"]

        def chunks():  # no Content-Length: refused while it streams in
            for start in range(0, len(archive), 4096):
                yield archive[start : start + 4096]

        streamed = client.post("/collections/import", params={"name": "copy"}, content=chunks())
        assert streamed.status_code == 413, streamed.text
        assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["reports"]
    runtime.close()
    close_collections(collections)
    assert not [path for path in (tmp_path / "data").rglob(".importing-*")]


def test_export_and_import_need_no_model(backend_name, settings, tmp_path):
    collections = open_collections(backend_name, tmp_path)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
        fill(client)
        archive = client.get("/collections/reports/export").content
    runtime.close()
    idle = Runtime(settings, collections=collections)  # no model loaded: searches are 503
    with TestClient(create_app(runtime=idle), headers=AUTH) as client:
        assert client.post("/collections/reports/search", json={"query": "q"}).status_code == 503
        exported = client.get("/collections/reports/export")
        assert exported.status_code == 200 and len(exported.content) == len(archive)
        imported = client.post("/collections/import", params={"name": "copy"}, content=archive)
        assert imported.status_code == 201, imported.text
        assert imported.json()["documents"] == 3 and imported.json()["model"]["model"] == "fake/model"
    idle.close()
    close_collections(collections)
