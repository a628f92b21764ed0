"""Every route through a real uvicorn process serving a tiny real-architecture checkpoint; a client
that parses like morphik-core gets colpali-engine's vectors."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import torch

from pagelens.models.families import get_family
from tests.api.conftest import REAL_HEADERS as HEADERS
from tests.conftest import encode, make_page

PAGES = [make_page(600, 800, 11), make_page(500, 300, 12), make_page(320, 320, 13)]
QUERIES = ["total revenue 2023?", "a chart of quarterly sales by region and product line"]


@pytest.fixture(scope="module")
def reference(tiny_model):
    """colpali-engine on each input alone (float32)."""
    family = get_family("colqwen2_5")
    _, processor_class = family.classes()
    model = family.from_pretrained(tiny_model, dtype=torch.float32).eval()
    processor = processor_class.from_pretrained(tiny_model)

    def embed(kind, payload):
        inputs = processor.process_images([payload]) if kind == "image" else processor.process_queries([payload])
        with torch.inference_mode():
            return model(**inputs)[0][inputs["attention_mask"][0].bool()].numpy()

    return embed


def b64(image, image_format="PNG") -> str:
    return base64.b64encode(encode(image, image_format)).decode()


def morphik_parse(body: bytes) -> list[np.ndarray]:
    data = np.load(io.BytesIO(body), allow_pickle=False)
    return [data[f"emb_{i}"].astype(np.float32) for i in range(int(data["count"]))]


def test_morphik_client_gets_colpali_engine_vectors(server, reference):
    with httpx.Client(base_url=server, headers={**HEADERS, "Accept": "*/*"}, timeout=120) as client:
        images = client.post("/embeddings", json={"input_type": "image", "inputs": [b64(p) for p in PAGES]})
        texts = client.post("/embeddings", json={"input_type": "text", "inputs": QUERIES})
    assert images.status_code == 200 and texts.status_code == 200
    for got, page in zip(morphik_parse(images.content), PAGES, strict=True):
        expected = reference("image", page)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 2e-3
    for got, query in zip(morphik_parse(texts.content), QUERIES, strict=True):
        expected = reference("query", query)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 2e-3


def test_json_and_openai_base64_forms_give_the_same_vectors(server):
    inputs = [b64(p) for p in PAGES[:2]]
    with httpx.Client(base_url=server, headers=HEADERS, timeout=120) as client:
        npz = morphik_parse(client.post("/embeddings", json={"input_type": "image", "inputs": inputs}).content)
        as_json = client.post(
            "/embeddings", json={"input_type": "image", "inputs": inputs}, headers={"Accept": "application/json"}
        ).json()["embeddings"]
        openai = client.post(
            "/v1/embeddings",
            json={"input": [f"data:image/png;base64,{v}" for v in inputs], "encoding_format": "base64"},
        ).json()["data"]
    for index, vectors in enumerate(npz):
        np.testing.assert_allclose(np.asarray(as_json[index], dtype=np.float32), vectors, atol=1e-6)
        item = openai[index]
        raw = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").reshape(item["shape"])
        np.testing.assert_allclose(raw, vectors, atol=1e-5)


def test_every_route_through_uvicorn(server):
    with httpx.Client(base_url=server, headers=HEADERS, timeout=120) as client:
        embed = client.post("/embed", json={"images": [b64(PAGES[2])], "texts": ["q"]}).json()
        assert embed["dimension"] == 128 and embed["image_count"] == 1 and len(embed["embeddings"]) == 2
        score = client.post("/score", json={"query": "revenue", "images": [b64(p) for p in PAGES]}).json()
        assert len(score["scores"]) == 3 and score["method"] == "maxsim"
        assert client.get("/").json()["model"]["family"] == "colqwen2_5"
        assert "pagelens_requests_total" in client.get("/metrics").text
        assert client.get("/docs").status_code == 200
        assert client.get("/nothing").status_code == 404
        assert client.put("/embed").status_code == 405
        bad = client.post("/embeddings", json={"input_type": "image", "inputs": [b64(PAGES[0]), "@@@"]})
        assert bad.status_code == 400 and bad.json()["error"]["index"] == 1
        assert client.post("/embeddings", json={"input_type": "text", "inputs": ["ok"]}).status_code == 200
    assert httpx.get(f"{server}/embeddings").status_code == 401
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
