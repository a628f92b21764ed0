"""Every bad input gets a clear 4xx naming the input index where there is one, and the server
answers correctly right after."""

from __future__ import annotations

import base64
import json
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.engine import EngineConfig
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend, embed_alone
from tests.api.conftest import AUTH, b64_page, fake_runtime
from tests.conftest import encode, make_page


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = b64_page(60, 80, 1)
TRUNCATED_PNG = b64(encode(make_page(200, 200, 2))[:300])
TRUNCATED_JPEG = b64(encode(make_page(200, 200, 3), "JPEG")[:400])

BAD_IMAGES = [
    ("not base64", "this is not base64!!", "base64"),
    ("a PDF", b64(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), "PDF"),
    ("plain text", b64(b"hello world, just some text"), "text"),
    ("truncated PNG", TRUNCATED_PNG, "corrupt"),
    ("truncated JPEG", TRUNCATED_JPEG, "corrupt"),
    ("zero pixels", b64(_png_claiming(0, 10)), ""),
    ("decompression bomb", b64(_png_claiming(60_000, 60_000)), "limit"),
    ("empty string", "", ""),
]


@pytest.mark.parametrize(("name", "payload", "reason"), BAD_IMAGES, ids=[case[0] for case in BAD_IMAGES])
def test_bad_image_is_a_400_naming_its_index_on_every_route(client, name, payload, reason):
    morphik = client.post("/embeddings", json={"input_type": "image", "inputs": [GOOD, payload]})
    assert morphik.status_code == 400, (name, morphik.text)
    error = morphik.json()["error"]
    assert error["index"] == 1 and error["type"] == "invalid_input"
    assert reason.lower() in error["message"].lower()
    seed004 = client.post("/embed", json={"images": [payload]})
    assert seed004.status_code == 400 and seed004.json()["error"]["index"] == 0
    if payload:
        openai = client.post("/v1/embeddings", json={"input": ["q", "q2", "data:image/png;base64," + payload]})
        assert openai.status_code == 400 and openai.json()["error"]["index"] == 2, openai.text
    assert client.post("/embeddings", json={"input_type": "image", "inputs": [GOOD]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "index", "fragment"),
    [
        ({"input_type": "text", "inputs": ["ok", 3]}, 1, "string"),
        ({"input_type": "text", "inputs": ["ok", None]}, 1, "string"),
        ({"input_type": "text", "inputs": ["ok", ""]}, 1, "empty"),
        ({"input_type": "video", "inputs": ["x"]}, None, "input_type"),
        ({"inputs": ["x"]}, None, "input_type"),
        ({"input_type": "text"}, None, "inputs"),
        ({"input_type": "text", "inputs": "not a list"}, None, "inputs"),
    ],
)
def test_bad_request_fields(client, body, index, fragment):
    response = client.post("/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.get("index") == index and fragment in error["message"]
    assert client.post("/embeddings", json={"input_type": "text", "inputs": ["fine"]}).status_code == 200


def test_malformed_json_unknown_route_wrong_method(client):
    broken = client.post(
        "/embeddings", content=b'{"input_type": "text", "inputs": [', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = client.get("/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "method_not_allowed"
    assert client.post("/embeddings", json={"input_type": "text", "inputs": ["fine"]}).status_code == 200


def test_too_many_inputs_and_oversized_bodies_are_413(client):
    many = client.post("/embeddings", json={"input_type": "text", "inputs": ["q"] * 17})
    assert many.status_code == 413 and "limit of 16" in many.json()["error"]["message"]
    huge = client.post("/embeddings", content=b"x" * 2_000_001, headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["type"] == "payload_too_large"

    def chunks():
        for _ in range(30):
            yield b" " * 100_000

    streamed = client.post("/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/embeddings", json={"input_type": "text", "inputs": ["fine"]}).status_code == 200


def test_images_and_texts_of_one_request_count_together_against_the_limit(client):
    image = b64_page(40, 40)
    for path, body in [
        ("/embed", {"images": [image] * 9, "texts": ["q"] * 8}),
        ("/v1/embeddings", {"input": ["data:image/png;base64," + image] * 9 + ["q"] * 8}),
    ]:
        refused = client.post(path, json=body)
        assert refused.status_code == 413, (path, refused.text)
        assert "17 inputs" in refused.json()["error"]["message"] and "limit of 16" in refused.json()["error"]["message"]
    assert client.post("/embed", json={"images": [image] * 8, "texts": ["q"] * 8}).status_code == 200
    mixed = {"input": ["data:image/png;base64," + image] * 8 + ["q"] * 8}
    assert client.post("/v1/embeddings", json=mixed).status_code == 200


def test_score_refuses_pages_it_cannot_score(client, backend):
    page = np.ones((3, backend.dim), dtype=np.float32)
    too_many = client.post("/score", json={"query": "q", "embeddings": [page.tolist()] * 17})
    assert too_many.status_code == 413 and "limit of 16" in too_many.json()["error"]["message"]
    query = embed_alone(backend, "query", "q")
    huge = (3e38 * query / np.abs(query).max(axis=1, keepdims=True)).tolist()  # finite, each dot product >= 3e38
    response = client.post("/score", json={"query": "q", "embeddings": [page.tolist(), huge]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input" and error["index"] == 1 and "inf" in error["message"]
    fine = client.post("/score", json={"query": "q", "embeddings": [page.tolist()] * 16})
    assert fine.status_code == 200 and None not in fine.json()["scores"]


def test_full_queue_is_429_with_retry_after():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: release.wait(10))
    config = EngineConfig(max_queued_items=2, max_batch_queries=1, max_wait_ms=0)
    service = fake_runtime(backend, config, settings=Settings(model="fake", api_key=None, no_auth=True))
    app = create_app(runtime=service)
    with TestClient(app, headers=AUTH) as client:
        futures = service.engine.submit_queries(["a", "b"])
        response = client.post("/embeddings", json={"input_type": "text", "inputs": ["c"]})
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        release.set()
        for future in futures:
            future.result(5)
        assert client.post("/embeddings", json={"input_type": "text", "inputs": ["c"]}).status_code == 200
    service.engine.close()


def test_dead_engine_makes_health_503_and_routes_503():
    service = fake_runtime(settings=Settings(model="fake", api_key=None, no_auth=True))
    app = create_app(runtime=service)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        service.engine.close()
        assert client.get("/health").status_code == 503
        response = client.post("/embeddings", json={"input_type": "text", "inputs": ["x"]})
        assert response.status_code == 503 and response.json()["error"]["type"] == "model_not_ready"


def test_score_has_a_lower_body_limit_than_the_embedding_routes():
    """Its embeddings come as JSON float lists, whose parsing holds the interpreter's lock: a body over
    PAGELENS_MAX_SCORE_BYTES is refused before it is read, while the other routes take it."""
    settings = Settings(model="fake", api_key=None, no_auth=True, max_body_bytes=2_000_000, max_score_bytes=100_000)
    runtime = fake_runtime(settings=settings)
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            body = {"query": "q", "embeddings": [[[0.5] * 16] * 150] * 12}  # ~120 kB of JSON, 12 pages
            refused = client.post("/score", json=body)
            assert refused.status_code == 413 and "PAGELENS_MAX_SCORE_BYTES" in refused.json()["error"]["message"]
            small = client.post("/score", json={"query": "q", "embeddings": [[[0.5] * 16] * 40]})
            assert small.status_code == 200
            padded = json.dumps({"input_type": "text", "inputs": ["q" * 10]}) + " " * 150_000
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            elsewhere = client.post("/embeddings", content=padded, headers=headers)
            assert elsewhere.status_code == 200
    finally:
        runtime.close()
