"""Every route in-process over the fake backend: wire formats, auth, metrics, health."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np

from pagelens.codecs.images import decode_image
from pagelens.index.scoring import maxsim
from pagelens.testing.fake import embed_alone
from tests.api.conftest import API_KEY, b64_page


def expected_image(backend, b64: str) -> np.ndarray:
    return embed_alone(backend, "image", decode_image(base64.b64decode(b64)))


def parse_like_morphik(body: bytes) -> list[np.ndarray]:
    """What morphik-core's ColpaliApiEmbeddingModel does with the response body."""
    data = np.load(io.BytesIO(body), allow_pickle=False)
    count = int(data["count"])
    return [data[f"emb_{i}"].astype(np.float32) for i in range(count)]


def test_morphik_images_default_to_npz_in_input_order(client, backend):
    pages = [b64_page(120, 160, 1), b64_page(200, 90, 2, "JPEG"), "data:image/png;base64," + b64_page(64, 64, 3)]
    response = client.post("/embeddings", json={"input_type": "image", "inputs": pages}, headers={"Accept": "*/*"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npz"
    vectors = parse_like_morphik(response.content)
    assert len(vectors) == 3
    assert str(np.load(io.BytesIO(response.content))["input_type"]) == "image"
    for got, page in zip(vectors, pages, strict=True):
        np.testing.assert_array_equal(got, expected_image(backend, page.split(",")[-1]))


def test_morphik_texts_and_the_json_form_agree(client, backend):
    texts = ["what is revenue?", "chart of sales by region"]
    npz = client.post("/embeddings", json={"input_type": "text", "inputs": texts})
    as_json = client.post(
        "/embeddings", json={"input_type": "text", "inputs": texts}, headers={"Accept": "application/json"}
    )
    assert as_json.headers["content-type"].startswith("application/json")
    from_json = [np.asarray(e, dtype=np.float32) for e in as_json.json()["embeddings"]]
    for a, b, text in zip(parse_like_morphik(npz.content), from_json, texts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_array_equal(a, embed_alone(backend, "query", text))


def test_morphik_float16_on_request_and_empty_inputs(client):
    response = client.post("/embeddings?dtype=float16", json={"input_type": "text", "inputs": ["a b"]})
    assert np.load(io.BytesIO(response.content))["emb_0"].dtype == np.float16
    empty = client.post("/embeddings", json={"input_type": "image", "inputs": []})
    assert empty.status_code == 200 and parse_like_morphik(empty.content) == []


def test_seed004_embed_images_then_texts(client, backend):
    page = b64_page(100, 100, 5)
    response = client.post("/embed", json={"images": [page], "texts": ["hello there"], "normalize": True})
    body = response.json()
    assert response.status_code == 200
    assert body["dimension"] == backend.dim and body["image_count"] == 1 and body["text_count"] == 1
    assert len(body["embeddings"]) == 2
    np.testing.assert_allclose(np.asarray(body["embeddings"][0]), expected_image(backend, page), atol=1e-6)
    assert body["shapes"][1] == [12, backend.dim]


def test_openai_mixed_inputs_float_and_base64_agree(client, backend):
    image = "data:image/png;base64," + b64_page(90, 120, 7)
    inputs = ["first query", image, "second query here"]
    as_float = client.post("/v1/embeddings", json={"model": "x", "input": inputs}).json()
    as_b64 = client.post("/v1/embeddings", json={"input": inputs, "encoding_format": "base64"}).json()
    assert [item["index"] for item in as_float["data"]] == [0, 1, 2]
    for float_item, b64_item in zip(as_float["data"], as_b64["data"], strict=True):
        raw = np.frombuffer(base64.b64decode(b64_item["embedding"]), dtype="<f4").reshape(b64_item["shape"])
        np.testing.assert_array_equal(raw, np.asarray(float_item["embedding"], dtype=np.float32))
        assert b64_item["dtype"] == "float32" and float_item["shape"] == b64_item["shape"]
    np.testing.assert_array_equal(
        np.asarray(as_float["data"][1]["embedding"], dtype=np.float32), expected_image(backend, image.split(",")[1])
    )
    single = client.post("/v1/embeddings", json={"input": "just one", "embed_dtype": "float16"}).json()
    assert len(single["data"]) == 1 and single["data"][0]["dtype"] == "float16"


def test_score_against_images_and_embeddings(client, backend):
    pages = [b64_page(80, 80, i) for i in range(3)]
    query_vectors = embed_alone(backend, "query", "find the table")
    page_vectors = [expected_image(backend, page) for page in pages]
    by_images = client.post("/score", json={"query": "find the table", "images": pages}).json()
    expected = [maxsim(query_vectors, p) for p in page_vectors]
    np.testing.assert_allclose(by_images["scores"], expected, rtol=1e-5)
    by_embeddings = client.post(
        "/score", json={"query": "find the table", "embeddings": [p.tolist() for p in page_vectors]}
    ).json()
    np.testing.assert_allclose(by_embeddings["scores"], expected, rtol=1e-5)
    assert [item["index"] for item in by_embeddings["data"]] == [0, 1, 2]


def test_health_info_metrics_docs(client):
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"
    info = client.get("/").json()
    assert info["name"] == "pagelens" and info["model"]["model"] == "fake/model"
    client.post("/embeddings", json={"input_type": "text", "inputs": ["x"]})
    client.post("/embeddings", json={"input_type": "nope", "inputs": ["x"]})
    metrics = client.get("/metrics").text
    assert 'pagelens_requests_total{method="POST",route="/embeddings",status="200"}' in metrics
    assert 'pagelens_errors_total{type="invalid_input"}' in metrics
    assert "pagelens_queue_depth" in metrics and "pagelens_batch_size_bucket" in metrics
    docs = client.get("/docs")
    assert docs.status_code == 200 and '"syntaxHighlight": false' in docs.text


def test_auth_on_every_route_but_health_and_key_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    for path, method in [("/embeddings", "post"), ("/", "get"), ("/metrics", "get"), ("/docs", "get")]:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = getattr(client, method)(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["type"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/health", headers={"Authorization": ""}).status_code == 200
    assert API_KEY not in caplog.text


def test_access_log_has_stage_timings(client, caplog):
    caplog.set_level(logging.INFO, logger="pagelens.access")
    client.post("/embeddings", json={"input_type": "image", "inputs": [b64_page(50, 50, 9)]})
    line = next(r.getMessage() for r in caplog.records if r.name == "pagelens.access")
    assert "POST /embeddings status=200" in line and "items=1" in line
    for stage in ("decode_ms=", "queue_ms=", "forward_ms=", "encode_ms="):
        assert stage in line
