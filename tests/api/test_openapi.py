"""The OpenAPI document is a contract: the Bearer scheme, a body or media type for every success,
the error body on every error; the real bodies validate against the declared models; /docs loads
nothing from outside the server."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from pagelens.api import create_app, protocol
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import API_KEY, AUTH, b64_page, fake_runtime
from tests.conftest import encode, make_page

SUCCESS = ("200", "201", "202")
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    settings = Settings(model="fake/model", api_key=API_KEY, data_dir=str(tmp_path_factory.mktemp("data")))
    runtime = fake_runtime(settings=settings)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
        response = client.get("/openapi.json")
    runtime.close()
    assert response.status_code == 200
    return response.json()


def operations(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", path, operation


def test_the_bearer_scheme_is_declared_and_applied_to_every_operation_but_health(document):
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>",
    }  # fmt: skip
    for name, path, operation in operations(document):
        if path == "/health":
            assert "security" not in operation and "401" not in operation["responses"], name
        else:
            assert operation["security"] == [{"bearer": []}], name
            assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, name


def test_every_success_has_a_schema_or_a_media_type(document):
    for name, _path, operation in operations(document):
        successes = [code for code in operation["responses"] if code in SUCCESS]
        assert successes, name
        for status in successes:  # an upload: 200 stored, or 202 queued (wait=false)
            content = operation["responses"][status].get("content")
            assert content, name
            for media_type, body in content.items():
                schema = body.get("schema")
                assert schema, (name, media_type)
                if media_type == "application/json":
                    assert "$ref" in schema, (name, schema)  # a declared model, not `{}`
    responses = {name: operation["responses"] for name, _path, operation in operations(document)}
    assert set(responses["GET /metrics"]["200"]["content"]) == {"text/plain"}
    assert set(responses["GET /collections/{name}/documents/{document_id}/pages/{page}"]["200"]["content"]) == {
        "image/png",
        "image/jpeg",  # ?width=: a thumbnail
    }
    assert set(responses["POST /embeddings"]["200"]["content"]) == {"application/x-npz", "application/json"}


def test_every_error_response_is_the_error_body(document):
    assert "HTTPValidationError" not in document["components"]["schemas"], "validation errors are 400 error bodies"
    for name, _path, operation in operations(document):
        errors = {code: response for code, response in operation["responses"].items() if code[0] in "45"}
        assert "4XX" in errors and "5XX" in errors, name
        for code, response in errors.items():
            if name == "GET /health" and code == "503":
                continue  # the health check's own body
            assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, (name, code)
    schema = document["components"]["schemas"]["ErrorResponse"]
    assert schema["required"] == ["error"]
    assert set(document["components"]["schemas"]["ErrorDetail"]["properties"]) == {"type", "message", "index"}


def test_the_search_filter_and_the_document_routes_are_described(document):
    schemas = document["components"]["schemas"]
    (by_field, null) = schemas["SearchRequest"]["properties"]["filter"]["anyOf"]
    assert null == {"type": "null"} and by_field["type"] == "object"
    assert by_field["additionalProperties"]["anyOf"] == [
        {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"$ref": "#/components/schemas/FilterOperators"}
    ]  # fmt: skip
    operators = schemas["FilterOperators"]
    assert set(operators["properties"]) == {"$in", "$gt", "$gte", "$lt", "$lte"}
    assert operators["additionalProperties"] is False and operators["minProperties"] == 1
    assert operators["properties"]["$in"]["minItems"] == 1 and operators["properties"]["$in"]["type"] == "array"
    bound = {"anyOf": [{"type": "number"}, {"type": "string", "format": "date"},
                       {"type": "string", "format": "date-time"}]}  # fmt: skip
    for name in ("$gt", "$gte", "$lt", "$lte"):
        assert operators["properties"][name]["anyOf"] == bound["anyOf"], name
    paths = document["paths"]
    patch = paths["/collections/{name}/documents/{document_id}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PatchDocumentRequest")
    assert schemas["PatchDocumentRequest"]["required"] == ["metadata"]
    for operation in (patch, paths["/collections/{name}/documents/{document_id}"]["get"]):
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DocumentInfo")
        assert {"400", "404"} <= set(operation["responses"])
    assert {"bytes", "sha256", "created_at", "metadata"} <= set(schemas["DocumentInfo"]["properties"])
    assert "metadata_kept" in schemas["DocumentAdded"]["required"]
    file = paths["/collections/{name}/documents/{document_id}/file"]["get"]["responses"]["200"]["content"]
    assert {"application/pdf", "image/png", "image/jpeg"} <= set(file)


def test_embedding_routes_declare_their_limits(document):
    responses = {name: operation["responses"] for name, _path, operation in operations(document)}
    for name in ("POST /embeddings", "POST /embed", "POST /v1/embeddings", "POST /score"):
        assert {"400", "408", "413", "429", "503"} <= set(responses[name]), name


def validates(model: type[BaseModel], response) -> None:
    assert response.status_code < 300, response.text
    model.model_validate(response.json())


def test_the_bodies_of_the_embedding_routes_validate_against_their_models(client, backend):
    page = b64_page(64, 64)
    json_accept = {"Accept": "application/json"}
    validates(protocol.MorphikEmbeddingsJSON, client.post("/embeddings", json={"input_type": "text", "inputs": ["q"]},
                                                          headers=json_accept))  # fmt: skip
    npz = client.post("/embeddings", json={"input_type": "image", "inputs": [page]})
    assert npz.headers["content-type"] == "application/x-npz"
    validates(protocol.Seed004EmbedResponse, client.post("/embed", json={"images": [page], "texts": ["q"]}))
    for encoding in ("float", "base64"):
        body = {"input": ["q", "data:image/png;base64," + page], "encoding_format": encoding}
        validates(protocol.OpenAIEmbeddingsResponse, client.post("/v1/embeddings", json=body))
    vectors = client.post("/embeddings", json={"input_type": "text", "inputs": ["q"]}, headers=json_accept).json()
    validates(protocol.ScoreResponse, client.post("/score", json={"query": "q", "embeddings": vectors["embeddings"]}))
    validates(protocol.Health, client.get("/health"))
    validates(protocol.ServerInfo, client.get("/"))
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    for bad in (client.post("/embeddings", json={"input_type": "text", "inputs": [""]}), client.get("/nope"),
                client.get("/", headers={"Authorization": "Bearer wrong"})):  # fmt: skip
        assert bad.status_code >= 400
        protocol.ErrorResponse.model_validate(bad.json())


def test_the_bodies_of_the_collection_routes_validate_against_their_models(tmp_path):
    settings = Settings(model="fake", api_key=API_KEY, data_dir=str(tmp_path / "data"), pdf_dpi=72)
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
        validates(protocol.CollectionInfo, client.post("/collections", json={"name": "c"}))
        scan = ("scan.png", encode(make_page(120, 160, 1)))
        added = client.post("/collections/c/documents", files={"file": scan}, data={"metadata": '{"year": 2024}'})
        validates(protocol.DocumentAdded, added)
        validates(protocol.CollectionList, client.get("/collections"))
        validates(protocol.CollectionInfo, client.get("/collections/c"))
        validates(protocol.DocumentList, client.get("/collections/c/documents"))
        validates(protocol.SearchResponse, client.post("/collections/c/search", json={"query": "q"}))
        filtered = {"query": "q", "filter": {"year": {"$gte": 2020, "$lt": 2030}}}
        validates(protocol.SearchResponse, client.post("/collections/c/search", json=filtered))
        document = f"/collections/c/documents/{added.json()['id']}"
        validates(protocol.DocumentInfo, client.get(document))
        validates(protocol.DocumentInfo, client.patch(document, json={"metadata": {"team": "b"}}))
        assert client.get(f"{document}/file").headers["content-type"] == "image/png"
        png = client.get(f"/collections/c/documents/{added.json()['id']}/pages/1")
        assert png.headers["content-type"] == "image/png"
        validates(protocol.Deleted, client.delete(f"/collections/c/documents/{added.json()['id']}"))
        validates(protocol.Deleted, client.delete("/collections/c"))
    runtime.close()


def test_docs_load_nothing_from_outside_the_server(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    outside = [url for url in re.findall(r"https?://[^\s\"'<>)]+", html) if not url.startswith(str(client.base_url))]
    assert outside == [], outside
    local = re.findall(r"(?:src|href)=\"([^\"]+)\"", html) + re.findall(r"url: '([^']+)'", html)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"} <= set(local)
    for url in local:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert client.get("/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    assert client.get("/docs/../pyproject.toml").status_code == 404
    assert client.get("/docs/redoc.standalone.js").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_the_snapshot_routes_are_described(document):
    paths = document["paths"]
    export = paths["/collections/{name}/export"]["get"]["responses"]
    assert export["200"]["content"] == {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}
    assert {"400", "404"} <= set(export)
    imported = paths["/collections/import"]["post"]
    assert imported["requestBody"]["required"] is True
    assert set(imported["requestBody"]["content"]) == {"application/x-tar"}
    assert imported["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/CollectionInfo")
    assert {"400", "409", "413", "422"} <= set(imported["responses"])
    assert [p["name"] for p in imported["parameters"]] == ["name"]
