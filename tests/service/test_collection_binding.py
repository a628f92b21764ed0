"""Collections are bound to the model that filled them: another model (or output kind) is refused
with 409 model_mismatch and nothing stored changes; another pooling may search but not add; a
collection from before bindings is adopted; an unreadable binding is named, and the others work.
In process, over HTTP, with fake models restarted on one data directory."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.index.collections import Collections
from pagelens.models.embedder import EmbedderInfo
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf


@contextmanager
def serving(data_dir: Path, backend: FakeBackend):
    """A server over `backend` on `data_dir` (one 'restart' per call)."""
    settings = Settings(model=backend.info.model, api_key="test-key-123", data_dir=str(data_dir), pdf_dpi=72)
    runtime = fake_runtime(backend, settings=settings)
    try:
        with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
            yield client
    finally:
        runtime.close()


def upload(client, data: bytes, name: str = "doc.pdf"):
    return client.post("/collections/c/documents", files={"file": (name, data, "application/octet-stream")})


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` with a hash of its bytes, but for the Qdrant Edge shard's own
    files (opening a shard rewrites its config and segment files; its points are checked by search)."""
    files = [path for path in sorted(directory.rglob("*")) if path.is_file()]
    kept = [path for path in files if "store" not in path.relative_to(directory).parts]
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest() for path in kept}


def pooled(info: EmbedderInfo, factor: int) -> FakeBackend:
    backend = FakeBackend(dim=128, name=info.model)
    backend.info = EmbedderInfo(**{**info.as_dict(), "pool_factor": factor})
    return backend


@pytest.fixture
def filled(tmp_path) -> Path:
    """A data directory with collection `c` filled by fake/model (a 3-page PDF)."""
    with serving(tmp_path / "data", FakeBackend(dim=128)) as client:
        assert client.post("/collections", json={"name": "c"}).status_code == 201
        assert upload(client, make_pdf(3)).status_code == 200
        binding = client.get("/collections/c").json()["model"]
    assert binding == {"model": "fake/model", "revision": None, "family": "fake", "multi_vector": True, "dim": 128,
                       "pool_factor": None}  # fmt: skip
    return tmp_path / "data"


@pytest.mark.parametrize(
    "other",
    [FakeBackend(dim=128, name="other/model"), FakeBackend(dim=128, multi_vector=False)],
    ids=["another model", "another output kind"],
)
def test_another_model_may_neither_search_nor_add_and_nothing_changes(filled, other):
    before = snapshot(filled)
    with serving(filled, FakeBackend(dim=128)) as client:
        results_before = client.post("/collections/c/search", json={"query": "revenue", "k": 3}).json()
    with serving(filled, other) as client:
        for response in (
            client.post("/collections/c/search", json={"query": "revenue"}),
            upload(client, encode(make_page(120, 160, 7)), "new.png"),
        ):
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["type"] == "model_mismatch"
            assert "'c'" in error["message"] and "fake/model" in error["message"]
        (listed,) = client.get("/collections").json()["collections"]
        assert listed["compatible"] is False and listed["mismatch"]
        assert listed["pages"] == 3 and listed["model"]["model"] == "fake/model"
        assert len(client.get("/collections/c/documents").json()["documents"]) == 1  # reading needs no model
    assert snapshot(filled) == before and "c/binding.json" in before and "c/store.mirror/vectors.f16" in before
    with serving(filled, FakeBackend(dim=128)) as client:  # the right model again: all there, unchanged
        assert client.post("/collections/c/search", json={"query": "revenue", "k": 3}).json() == results_before
        assert client.get("/collections/c").json()["pages"] == 3


def test_the_same_model_pooled_differently_may_search_but_not_add(filled):
    with serving(filled, pooled(FakeBackend(dim=128).info, 3)) as client:
        assert client.post("/collections/c/search", json={"query": "revenue"}).status_code == 200
        refused = upload(client, encode(make_page(120, 160, 7)), "new.png")
        assert refused.status_code == 409 and "pool factor" in refused.json()["error"]["message"]
        assert client.get("/collections/c").json()["pages"] == 3


def test_a_collection_from_before_bindings_is_adopted_by_the_first_model(tmp_path, caplog):
    legacy = Collections(tmp_path / "data")
    legacy.create("c")  # no binding, as every collection made before this version
    legacy.close()
    with caplog.at_level(logging.WARNING), serving(tmp_path / "data", FakeBackend(dim=128)) as client:
        assert client.get("/collections/c").json()["model"] is None
        assert upload(client, make_pdf(2)).status_code == 200
        assert client.get("/collections/c").json()["model"]["model"] == "fake/model"
    assert "had no model binding; adopted by fake/model" in caplog.text
    with serving(tmp_path / "data", FakeBackend(dim=128, name="other/model")) as client:
        assert client.post("/collections/c/search", json={"query": "q"}).status_code == 409


def test_an_unreadable_binding_is_named_and_the_other_collections_work(filled):
    (filled / "c" / "binding.json").write_text("{not json")
    with serving(filled, FakeBackend(dim=128)) as client:
        assert client.post("/collections", json={"name": "fine"}).status_code == 201
        listing = {entry["name"]: entry for entry in client.get("/collections").json()["collections"]}
        assert listing["fine"]["compatible"] is True
        assert listing["c"]["error"]["type"] == "backend_failure"
        assert "'c'" in listing["c"]["error"]["message"] and "binding" in listing["c"]["error"]["message"]
        refused = client.post("/collections/c/search", json={"query": "q"})
        assert refused.status_code == 500 and "binding.json" in refused.json()["error"]["message"]
    assert (filled / "c" / "binding.json").read_text() == "{not json"


def test_a_binding_names_a_local_checkpoint_by_its_absolute_path(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    monkeypatch.chdir(tmp_path)
    with serving(tmp_path / "data", FakeBackend(dim=128, name="./ckpt")) as client:
        assert client.post("/collections", json={"name": "c"}).status_code == 201
    recorded = json.loads((tmp_path / "data" / "c" / "binding.json").read_text())
    assert recorded["model"] == str(checkpoint.resolve())
    with serving(tmp_path / "data", FakeBackend(dim=128, name=str(checkpoint))) as client:
        assert client.post("/collections/c/search", json={"query": "q"}).status_code == 200
