"""Single-vector (Bi*) models fill collections: a PDF and images are stored one vector a page, and
exact search ranks pages by the dot products of colpali-engine's own outputs (tiny BiQwen2.5 and
BiGemma3 checkpoints, through the HTTP routes of a real runtime)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pagelens.api import create_app
from pagelens.models.families import get_family
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing import build_tiny_checkpoint
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf

QUERY = "total revenue by region"


def colpali_engine_embed(family_name: str, checkpoint, images: list[Image.Image], query: str):
    """colpali-engine's own vectors, each input alone: `(pages, dim)` and `(dim,)` float32."""
    family = get_family(family_name)
    _, processor_class = family.classes()
    model = family.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = processor_class.from_pretrained(checkpoint)
    with torch.inference_mode():
        pages = [model(**processor.process_images([image]))[0].numpy() for image in images]
        query_vector = model(**processor.process_queries([query]))[0].numpy()
    return np.stack(pages), query_vector


@pytest.mark.slow
@pytest.mark.parametrize("family", ["biqwen2_5", "bigemma3"])
def test_a_bi_collection_ranks_pages_by_colpali_engine_dot_products(family, tmp_path):
    checkpoint = build_tiny_checkpoint(family, tmp_path / family)
    settings = Settings(model=str(checkpoint), device="cpu", dtype="float32", data_dir=str(tmp_path / "data"),
                        pdf_dpi=36, api_key=None, no_auth=True)  # fmt: skip
    runtime = Runtime(settings)
    with TestClient(create_app(runtime=runtime)) as client:
        runtime.start()
        created = client.post("/collections", json={"name": "bi"}).json()
        assert created["model"]["multi_vector"] is False and created["model"]["dim"] == runtime.info.dim
        documents = []
        for name, data in (("report.pdf", make_pdf(2)), ("a.png", encode(make_page(200, 150, 5))),
                           ("b.png", encode(make_page(160, 220, 6)))):  # fmt: skip
            response = client.post("/collections/bi/documents", files={"file": (name, data, "application/pdf")})
            assert response.status_code == 200, response.text
            documents.append(response.json())
        assert [document["pages"] for document in documents] == [2, 1, 1]
        pages = [(document["id"], page) for document in documents for page in range(1, document["pages"] + 1)]
        images = [Image.open(io.BytesIO(client.get(f"/collections/bi/documents/{d}/pages/{p}").content))
                  for d, p in pages]  # fmt: skip
        for mode in ("exact", "fast"):
            response = client.post("/collections/bi/search", json={"query": QUERY, "k": 4, "mode": mode})
            assert response.status_code == 200, response.text
            ranked = [(hit["document_id"], hit["page"], hit["score"]) for hit in response.json()["results"]]
            if mode == "exact":
                exact = ranked
            assert ranked == exact
    runtime.close()

    page_vectors, query_vector = colpali_engine_embed(family, checkpoint, images, QUERY)
    assert page_vectors.ndim == 2 and page_vectors.shape[1] == runtime.info.dim
    expected_scores = page_vectors.astype(np.float16).astype(np.float32) @ query_vector  # pages are stored float16
    expected = sorted(zip(pages, expected_scores, strict=True), key=lambda item: -item[1])
    assert [(d, p) for d, p, _ in exact] == [page for page, _ in expected]
    assert [s for _, _, s in exact] == pytest.approx([float(s) for _, s in expected], rel=2e-3, abs=2e-3)
