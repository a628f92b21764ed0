"""Documents and filters over HTTP (in-process, fake 128-d model, on Qdrant Edge and on the Qdrant
server store in local mode): GET / PATCH a document, its file, re-uploads keeping the stored
metadata, and every filter operator with the 400s of bad filters."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app, protocol
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.api.test_collections import close_collections, open_collections, upload
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf


@pytest.fixture(params=["edge", "qdrant-local"])
def http(request, tmp_path):
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    collections = open_collections(request.param, tmp_path)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as test_client:
        test_client.post("/collections", json={"name": "c"})
        yield test_client
    runtime.close()
    close_collections(collections)


def search(http, filter, k=20) -> set[tuple[str, int]]:
    response = http.post("/collections/c/search", json={"query": "revenue", "k": k, "filter": filter})
    assert response.status_code == 200, response.text
    return {(hit["name"], hit["page"]) for hit in response.json()["results"]}


def test_read_patch_and_download_a_document(http):
    pdf, png = make_pdf(2), encode(make_page(120, 160, 3))
    added = upload(http, "c", pdf, name="q3.pdf", metadata={"team": "finance", "year": 2023, "nested": {"a": 1}})
    document_id = added.json()["id"]
    upload(http, "c", png, name="scan.png", metadata={"team": "legal"})
    url = f"/collections/c/documents/{document_id}"

    document = http.get(url)
    protocol.DocumentInfo.model_validate(document.json())
    body = document.json()
    assert {key: body[key] for key in ("id", "name", "pages", "bytes", "sha256", "kind")} == {
        "id": document_id, "name": "q3.pdf", "pages": 2, "bytes": len(pdf), "sha256": hashlib.sha256(pdf).hexdigest(),
        "kind": "pdf",
    }  # fmt: skip
    assert body["metadata"] == {"team": "finance", "year": 2023, "nested": {"a": 1}}
    assert body["created_at"].endswith("Z") and body["dpi"] == 72

    file = http.get(f"{url}/file")
    assert file.status_code == 200 and file.content == pdf and file.headers["content-type"] == "application/pdf"
    assert file.headers["content-disposition"] == "attachment; filename*=UTF-8''q3.pdf"
    scan_id = hashlib.sha256(png).hexdigest()[:32]
    scan = http.get(f"/collections/c/documents/{scan_id}/file")
    assert scan.content == png and scan.headers["content-type"] == "image/png"

    patched = http.patch(url, json={"metadata": {"year": None, "reviewed": True, "nested": {"b": 2}}})
    assert patched.status_code == 200, patched.text
    protocol.DocumentInfo.model_validate(patched.json())
    expected = {"team": "finance", "reviewed": True, "nested": {"a": 1, "b": 2}}
    assert patched.json() == body | {"metadata": expected} and http.get(url).json() == patched.json()
    listed = http.get("/collections/c/documents").json()["documents"]
    assert [doc["metadata"] for doc in listed if doc["id"] == document_id] == [expected]
    assert search(http, {"reviewed": True}) == {("q3.pdf", 1), ("q3.pdf", 2)}
    hits = http.post("/collections/c/search", json={"query": "q", "filter": {"reviewed": True}}).json()["results"]
    assert all(hit["metadata"] == expected for hit in hits)
    gone = http.post("/collections/c/search", json={"query": "q", "filter": {"year": 2023}})
    assert gone.status_code == 400 and "unknown filter field(s) 'year'" in gone.json()["error"]["message"]

    again = upload(http, "c", pdf, name="copy.pdf", metadata={"team": "other"})
    assert again.json() == {"id": document_id, "pages": 2, "created": False, "metadata_kept": True}
    assert http.get(url).json()["metadata"] == expected

    for bad, says in [
        ({"metadata": [1]}, "metadata: Input should be a valid dictionary"),
        ({"metadata": "x"}, "metadata: Input should be a valid dictionary"),
        ({"metadata": None}, "metadata: Input should be a valid dictionary"),
        ({}, "metadata: Field required"),
        ({"metadata": {}, "name": "x"}, "name: Extra inputs are not permitted"),
        ({"metadata": {"a b": 1}}, "metadata: key 'a b'"),
        ({"metadata": {"n": 2**64}}, "metadata.n: integer 18446744073709551616 does not fit in 64 bits"),
        ({"metadata": {"big": "x" * 9000}}, "at most 8,192"),
    ]:
        refused = http.patch(url, json=bad)
        assert refused.status_code == 400 and says in refused.json()["error"]["message"], (bad, refused.text)
    assert http.patch(url, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert http.get(url).json()["metadata"] == expected, "a refused change writes nothing"

    for method in ("get", "patch"):
        for missing in ("0" * 32, "nope"):
            response = http.request(method.upper(), f"/collections/c/documents/{missing}", json={"metadata": {}})
            assert response.status_code == 404, (method, missing)
    assert http.get(f"/collections/c/documents/{'0' * 32}/file").status_code == 404
    assert http.get(f"/collections/nope/documents/{document_id}").status_code == 404
    assert http.delete(url).status_code == 200
    assert http.get(url).status_code == 404 and http.get(f"{url}/file").status_code == 404
    assert http.patch(url, json={"metadata": {"a": 1}}).status_code == 404


def test_filters_over_http(http):
    documents = {
        "a.pdf": {"team": "finance", "year": 2020, "date": "2024-01-15", "draft": True},
        "b.pdf": {"team": "legal", "year": 2022, "date": "2024-03-01T12:00:00Z", "draft": False},
        "c.pdf": {"team": "finance", "year": "2021"},
    }
    for number, (name, metadata) in enumerate(documents.items()):
        assert upload(http, "c", make_pdf(1 + number), name=name, metadata=metadata).status_code == 200

    def names(filter):
        return {name for name, _page in search(http, filter)}

    assert names({"team": "finance"}) == {"a.pdf", "c.pdf"}
    assert names({"team": {"$in": ["legal", "hr"]}}) == {"b.pdf"}
    assert names({"year": {"$gte": 2021}}) == {"b.pdf"}, "the string '2021' is no number"
    assert names({"year": {"$gt": 2019, "$lte": 2022}, "team": "finance"}) == {"a.pdf"}
    assert names({"date": {"$gte": "2024-02-01"}}) == {"b.pdf"}
    assert names({"date": {"$lt": "2024-03-01T13:00:00+02:00"}}) == {"a.pdf"}  # 11:00 UTC
    assert names({"draft": False}) == {"b.pdf"}
    assert names({"draft": {"$in": [True, False]}, "year": {"$lt": 2021}}) == {"a.pdf"}
    assert len(search(http, {"team": "finance"})) == 1 + 3, "every page of each matching document"

    for filter, says in [
        ({"date": {"$gte": "2024-13-01"}}, "filter.date.$gte: '2024-13-01' is not an ISO 8601 date"),
        ({"team": {"$in": []}}, "filter.team.$in must be a non-empty list"),
        ({"team": {"$in": ["a", 1]}}, "filter.team.$in: values must all be of one type"),
        ({"team": {"$eq": "a"}}, "filter.team: unknown operator(s) '$eq'"),
        ({"year": {"$gt": 1, "$lt": "2024-01-01"}}, "filter.year: range bounds must be all numbers or all dates"),
        ({"year": 2020.5}, "filter.year: value must be a string, integer or boolean"),
        ({"a.b": 1}, "filter: key 'a.b'"),
        (
            {"colour": {"$in": ["red"]}},
            "unknown filter field(s) 'colour'; metadata fields in 'c': date, draft, team, year",
        ),
    ]:
        response = http.post("/collections/c/search", json={"query": "q", "filter": filter})
        assert response.status_code == 400, (filter, response.text)
        assert response.json()["error"]["type"] == "invalid_input" and says in response.json()["error"]["message"]
    not_object = http.post("/collections/c/search", json={"query": "q", "filter": ["team"]})
    assert not_object.status_code == 400 and "filter must be an object" in not_object.json()["error"]["message"]


def test_a_bad_filter_is_refused_before_the_query_is_embedded(http):
    upload(http, "c", make_pdf(1), metadata={"team": "x"})
    engine = http.app.state.runtime.engine
    calls, submit_queries = [], engine.submit_queries

    def counted(*args, **kwargs):
        calls.append(args)
        return submit_queries(*args, **kwargs)

    engine.submit_queries = counted
    assert http.post("/collections/c/search", json={"query": "q", "filter": {"team": {"$in": []}}}).status_code == 400
    assert calls == []
    assert http.post("/collections/c/search", json={"query": "q", "filter": {"team": "x"}}).status_code == 200
    assert len(calls) == 1
