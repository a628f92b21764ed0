"""One runtime factory: every model and engine setting reaches the loaded model the same way from
`pagelens serve`, the embedded `pagelens index add` and the Modal class; `pagelens.load`."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import pagelens
from pagelens.errors import ModelNotReady
from pagelens.models import Embedder
from pagelens.testing.fake import FakeBackend
from tests.conftest import encode, make_page

SETTINGS_ENV = {
    "PAGELENS_DEVICE": "cpu",
    "PAGELENS_DTYPE": "float32",
    "PAGELENS_ATTN": "eager",
    "PAGELENS_FAMILY": "colqwen2_5",
    "PAGELENS_REVISION": "v1.0",
    "PAGELENS_CPU_THREADS": "1",
    "PAGELENS_POOL_FACTOR": "3",
    "PAGELENS_QUANTIZE": "int8",
    "PAGELENS_COMPILE": "1",
    "PAGELENS_MAX_BATCH_IMAGES": "3",
    "PAGELENS_MAX_WAIT_MS": "2.5",
}
EXPECTED_LOAD = {
    "device": "cpu", "dtype": "float32", "attn": "eager", "family": "colqwen2_5", "revision": "v1.0", "threads": 1,
    "pool_factor": 3, "quantize": "int8", "compile": True,
}  # fmt: skip


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """Every Embedder.load call as `(model, kwargs)`; each returns a fake 128-d model."""
    for name, value in SETTINGS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAGELENS_DATA_DIR", str(tmp_path / "data"))
    calls: list[tuple[str, dict]] = []

    def fake_load(model, **kwargs):
        calls.append((model, kwargs))
        return FakeBackend(dim=128, name=model)

    monkeypatch.setattr(Embedder, "load", staticmethod(fake_load))
    return calls


def assert_every_setting_reached(calls: list[tuple[str, dict]], model: str) -> None:
    assert len(calls) == 1
    loaded_model, kwargs = calls[0]
    assert loaded_model == model
    assert {name: kwargs.get(name) for name in EXPECTED_LOAD} == EXPECTED_LOAD


def test_serve_loads_the_model_with_every_setting(loads, monkeypatch):
    from pagelens.cli import app

    served = []

    def run_lifespan(asgi_app, **_options):
        with TestClient(asgi_app):  # start-up (the model loads) and shutdown, as uvicorn would
            runtime = asgi_app.state.runtime
            served.append((runtime.engine.config.max_batch_images, runtime.engine.config.max_wait_ms))

    monkeypatch.setattr("uvicorn.run", run_lifespan)
    result = CliRunner().invoke(app, ["serve", "--model", "served/model", "--api-key", "k"])
    assert result.exit_code == 0, result.output
    assert_every_setting_reached(loads, "served/model")
    assert served == [(3, 2.5)]


def test_embedded_index_add_loads_the_model_with_every_setting(loads, tmp_path):
    from pagelens.cli import app

    (tmp_path / "scan.png").write_bytes(encode(make_page(120, 160, 1)))
    result = CliRunner().invoke(app, ["index", "add", str(tmp_path / "scan.png"), "-c", "docs", "-m", "cli/model"])
    assert result.exit_code == 0, result.output
    assert "1 pages, added" in result.output
    assert_every_setting_reached(loads, "cli/model")


def test_the_modal_class_loads_the_model_with_every_setting(loads):
    from pagelens.deploy import modal_app

    user_class = modal_app.Pagelens._get_user_cls()
    container = user_class.__new__(user_class)
    container.model_name = "modal/model"
    methods = modal_app.Pagelens._get_partial_functions()
    methods["load_model"]._get_raw_f()(container)
    assert container.runtime.engine is None  # nothing runs before the snapshot
    methods["start_engine"]._get_raw_f()(container)
    try:
        assert_every_setting_reached(loads, "modal/model")
        assert container.runtime.engine.config.max_batch_images == 3
        assert container.runtime.settings.host == "0.0.0.0"
    finally:
        methods["stop_engine"]._get_raw_f()(container)


def test_pagelens_load_gives_a_ready_model_for_library_use(tiny_model):
    with pagelens.load(str(tiny_model), device="cpu", dtype="float32") as model:
        pages = model.embed_images([make_page(200, 260, 2), encode(make_page(160, 120, 3))])
        (query,) = model.embed_queries(["what is the total?"])
        assert model.info.multi_vector and model.info.dim == 128
        assert [page.shape[1] for page in pages] == [128, 128] and query.shape[1] == 128
        assert all(np.isfinite(page).all() for page in pages)
    with pytest.raises(ModelNotReady):
        model.embed_queries(["after close"])
