"""Pages without a similarity map answer 409 `no_similarity_map` saying why, through the routes of a
real runtime on tiny checkpoints: single-vector (Bi*) collections, collections stored pooled, and
pages stored before patch grids were recorded (which get maps once re-ingested)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing import build_tiny_checkpoint
from tests.conftest import encode, make_page

PAGE = encode(make_page(320, 400, 3))
QUERY = {"query": "total amount due"}


def heatmap_path(document: str, page: int = 1) -> str:
    return f"/collections/c/documents/{document}/pages/{page}/heatmap"


def serving(checkpoint, data_dir, **settings):
    """A TestClient over a started runtime of `checkpoint` with collection `c` holding PAGE; `(client, document id)`."""
    runtime = Runtime(Settings(model=str(checkpoint), device="cpu", dtype="float32", data_dir=str(data_dir),
                               api_key=None, no_auth=True, **settings))  # fmt: skip
    client = TestClient(create_app(runtime=runtime))
    client.__enter__()
    runtime.start()
    assert client.post("/collections", json={"name": "c"}).status_code == 201
    response = client.post("/collections/c/documents", files={"file": ("p.png", PAGE, "image/png")})
    assert response.status_code in (200, 201), response.text
    return client, runtime, response.json()["id"]


def assert_no_map(response, *reasons: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["type"] == "no_similarity_map"
    for reason in reasons:
        assert reason in error["message"]


@pytest.mark.slow
def test_a_single_vector_collection_has_no_maps(tmp_path):
    checkpoint = build_tiny_checkpoint("biqwen2_5", tmp_path / "bi")
    client, runtime, document = serving(checkpoint, tmp_path / "data")
    try:
        for params in (None, {"format": "png"}):
            response = client.post(heatmap_path(document), json=QUERY, params=params)
            assert_no_map(response, "single-vector pages", "no patches to map")
    finally:
        client.__exit__(None, None, None)
        runtime.close()


@pytest.mark.slow
def test_a_pooled_collection_has_no_maps(tiny_model, tmp_path):
    client, runtime, document = serving(tiny_model, tmp_path, pool_factor=2)
    try:
        assert_no_map(client.post(heatmap_path(document), json=QUERY), "pooled (pool factor 2)", "PAGELENS_POOL_FACTOR")
    finally:
        client.__exit__(None, None, None)
        runtime.close()


@pytest.mark.slow
def test_a_page_stored_without_its_grid_asks_for_a_reingest_and_has_maps_after_it(tiny_model, tmp_path):
    client, runtime, document = serving(tiny_model, tmp_path)
    try:
        assert client.post(heatmap_path(document), json=QUERY).status_code == 200
        assert client.delete(f"/collections/c/documents/{document}").status_code in (200, 204)
        # stored as pagelens stored pages before patch grids: the vectors alone
        collection = runtime.collections.index().get("c")
        collection.add(PAGE, name="p.png", metadata={}, embed=runtime.engine.embed_images)
        assert collection.stored_page(document, 1)[1] is None
        assert client.post("/collections/c/search", json=QUERY).json()["results"][0]["document_id"] == document

        assert_no_map(client.post(heatmap_path(document), json=QUERY), "without its patch grid", "re-ingest")
        assert_no_map(client.post(heatmap_path(document), json=QUERY, params={"format": "png"}), "re-ingest")
        assert client.post(heatmap_path(document, 2), json=QUERY).status_code == 404  # still 404 first

        assert client.delete(f"/collections/c/documents/{document}").status_code in (200, 204)
        files = {"file": ("p.png", PAGE, "image/png")}
        response = client.post("/collections/c/documents", files=files)
        assert response.status_code in (200, 201) and response.json()["id"] == document
        response = client.post(heatmap_path(document), json=QUERY)
        assert response.status_code == 200, response.text
        assert np.asarray(response.json()["maps"]).shape[1:] == tuple(response.json()["grid"])
    finally:
        client.__exit__(None, None, None)
        runtime.close()
