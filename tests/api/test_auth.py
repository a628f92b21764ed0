"""The app factory refuses to serve without a key unless told to (`no_auth`); what is open without a key."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.api.security import AuthNotConfigured
from pagelens.settings import Settings
from tests.api.conftest import fake_runtime

TEXT = {"input_type": "text", "inputs": ["q"]}


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (Settings(model="fake", api_key=None), "no API key"),
        (Settings(model="fake", api_key="k", no_auth=True), "drop one"),
    ],
)
def test_create_app_refuses_keyless_settings_unless_no_auth(settings, reason):
    with pytest.raises(AuthNotConfigured, match=reason):
        create_app(settings)
    runtime = fake_runtime(settings=settings)
    try:
        with pytest.raises(AuthNotConfigured, match=reason):
            create_app(runtime=runtime)
    finally:
        runtime.close()


def test_no_auth_serves_every_route_without_a_key():
    runtime = fake_runtime(settings=Settings(model="fake", api_key=None, no_auth=True))
    with TestClient(create_app(runtime=runtime)) as client:
        assert client.post("/embeddings", json=TEXT, headers={"Accept": "application/json"}).status_code == 200
        assert client.get("/openapi.json").status_code == 200
    runtime.close()


def test_with_a_key_only_health_is_open():
    runtime = fake_runtime(settings=Settings(model="fake", api_key="secret"))
    with TestClient(create_app(runtime=runtime)) as client:
        assert client.get("/health").status_code == 200
        for path in ("/", "/metrics", "/docs", "/openapi.json", "/collections"):
            assert client.get(path).status_code == 401, path
        assert client.post("/embeddings", json=TEXT).status_code == 401
        assert client.post("/embeddings", json=TEXT, headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/openapi.json", headers={"Authorization": "Bearer secret"}).status_code == 200
    runtime.close()


@pytest.mark.parametrize("public", [False, True])
def test_public_docs_open_the_docs_page_and_document_only(monkeypatch, public):
    if public:
        monkeypatch.setenv("PAGELENS_PUBLIC_DOCS", "1")
    runtime = fake_runtime(settings=Settings(model="fake", api_key="secret"))
    docs = ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/favicon.png", "/openapi.json")
    with TestClient(create_app(runtime=runtime)) as client:
        for path in docs:
            assert client.get(path).status_code == (200 if public else 401), path
        document = client.get("/openapi.json", headers={"Authorization": "Bearer secret"}).json()
        assert document["paths"]["/score"]["post"]["security"] == [{"bearer": []}]
        for path in ("/", "/metrics", "/collections", "/docs/nope"):
            assert client.get(path).status_code == 401, path
        assert client.post("/embeddings", json=TEXT).status_code == 401
    runtime.close()
