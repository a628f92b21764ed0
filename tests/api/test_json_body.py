"""The embedding routes read their JSON body once (orjson, off the event loop): the same errors and
OpenAPI schema as FastAPI's own parsing, the body buffer freed after the parse, and the base64
strings dropped as they are decoded."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.exceptions import RequestValidationError

from pagelens.api.json_body import _validated
from pagelens.api.protocol import MorphikEmbeddingsRequest
from pagelens.service.embeddings import EmbeddingService
from tests.api.conftest import b64_page, fake_runtime


def test_errors_and_schema_match_fastapis_own_parsing(client):
    for content, fragment in [(b"", "Field required"), (b'{"input_type": "text", "inputs": [', "malformed JSON")]:
        response = client.post("/embeddings", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and fragment in response.json()["error"]["message"], response.text
    bad = client.post("/embed", json={"images": ["ok", 7]})
    assert bad.status_code == 400 and bad.json()["error"]["index"] == 1 and "images.1" in bad.json()["error"]["message"]
    schema = client.get("/openapi.json").json()["paths"]
    for path in ("/embeddings", "/embed", "/v1/embeddings", "/score"):
        body = schema[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object" and body["properties"], path


def test_the_body_buffer_is_emptied_once_parsed():
    buffer = bytearray(b'{"input_type": "text", "inputs": ["a", "b"]}')
    assert _validated(MorphikEmbeddingsRequest, buffer).inputs == ["a", "b"]
    assert len(buffer) == 0
    broken = bytearray(b"{nope")
    with pytest.raises(RequestValidationError):
        _validated(MorphikEmbeddingsRequest, broken)
    assert len(broken) == 0


def test_the_service_drops_each_base64_string_once_decoded():
    runtime = fake_runtime()
    try:
        service: EmbeddingService = runtime.embeddings
        values = [b64_page(60, 40, seed) for seed in range(3)]
        kept = list(values)
        results = asyncio.run(service.embed_images(values, release_inputs=True))
        assert values == [None, None, None] and len(results) == 3
        asyncio.run(service.embed_images(kept))
        assert all(isinstance(value, str) for value in kept), "strings dropped without release_inputs"
    finally:
        runtime.close()
