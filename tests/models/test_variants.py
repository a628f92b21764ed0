"""The opt-in model variants (`quantize="int8"`, `compile=True`) on the tiny ColQwen2.5 checkpoint:
they load, give each input its own rows in float32 close to the plain float32 model, and refuse
bad values and unsupported devices before any weights are loaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from pagelens.engine import Engine, EngineConfig
from pagelens.errors import ModelLoadError
from pagelens.models import Embedder, variants
from pagelens.models import embedder as embedder_module
from pagelens.settings import Settings
from tests.conftest import make_page

QUERIES = ["revenue?", "What was the total revenue of the company in the third quarter of 2023?"]
# int8 dynamic quantization rounds weights (per output channel) and activations (per tensor) to 8 bits:
# about 0.4% relative error per matmul. On the tiny model the worst per-vector cosine to float32 is
# ~0.9995 (1 - cos = 5e-4); 0.995 allows 10x that, while a wrong scale, a quantized head or lost
# activations fall far below it.
INT8_MIN_COSINE = 0.995


def worst_cosine(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    worst = 1.0
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        worst = min(worst, float(cosine.min()))
    return worst


def embed_all(embedder: Embedder, pages) -> list[np.ndarray]:
    """Pages batched in twos (two page shapes in one batch) and alone, queries batched."""
    config = EngineConfig(max_batch_images=2, max_batch_queries=8, max_wait_ms=100)
    with Engine(embedder, config) as engine:
        vectors = engine.embed_images(pages) + engine.embed_queries(QUERIES)
        assert max(engine.stats.batch_sizes) > 1, "inputs were never batched together"
        return vectors


@pytest.fixture(scope="module")
def reference(tiny_model, pages_module):
    return embed_all(Embedder.load(str(tiny_model), device="cpu", dtype="float32"), pages_module)


@pytest.fixture(scope="module")
def pages_module():
    return [make_page(600, 800, 1), make_page(500, 300, 2), make_page(320, 320, 3)]


def test_int8_quantizes_the_backbone_keeps_the_head_and_stays_close(tiny_model, pages_module, reference):
    embedder = Embedder.load(str(tiny_model), device="cpu", quantize="int8")
    assert (embedder.info.quantize, embedder.info.dtype) == ("int8", "float32")
    quantized = [
        m for m in embedder.model.modules() if type(m).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
    ]
    plain = [name for name, m in embedder.model.named_modules() if type(m) is torch.nn.Linear]
    assert len(quantized) > 20 and plain == ["custom_text_proj"]
    got = embed_all(embedder, pages_module)
    worst = worst_cosine(got, reference)
    assert INT8_MIN_COSINE <= worst < 1.0, f"worst per-vector cosine vs float32: {worst:.5f}"


def test_compile_serves_two_batch_shapes_without_recompiling(tiny_model, pages_module, reference, monkeypatch):
    # aot_eager: dynamo's capture, guards and dynamic shapes as with inductor, without compiling C++
    # (inductor on this model takes minutes on 2 cores; `pagelens bench variants` runs it).
    monkeypatch.setattr(variants, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    try:
        embedder = Embedder.load(str(tiny_model), device="cpu", dtype="float32", compile=True)
        assert embedder.info.compiled
        warm = variants.compiled_graph_count()
        assert warm > 0
        got = embed_all(embedder, pages_module)
        assert variants.compiled_graph_count() == warm, "a serving shape recompiled after warm-up"
        for a, b in zip(got, reference, strict=True):
            assert a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-4
    finally:
        torch._dynamo.reset()


def test_bad_values_and_unsupported_devices_fail_before_loading_weights(tiny_model, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded before the refusal")

    monkeypatch.setattr(embedder_module, "_load_weights", no_weights)
    with pytest.raises(ModelLoadError, match="unknown quantize 'int4'"):
        Embedder.load(str(tiny_model), device="cpu", quantize="int4")
    with pytest.raises(ModelLoadError, match="float32"):
        Embedder.load(str(tiny_model), device="cpu", dtype="bfloat16", quantize="int8")
    monkeypatch.setattr(embedder_module.hardware, "resolve_device", lambda device: torch.device("cuda"))
    with pytest.raises(ModelLoadError, match="CPU only, not on cuda"):
        Embedder.load(str(tiny_model), device="cuda", quantize="int8")


def test_settings_and_flags_reach_the_loader(monkeypatch):
    from pagelens.cli import app
    from pagelens.service import load_embedder

    assert (Settings().quantize, Settings().compile) == ("none", False)
    assert set(Settings.model_fields["quantize"].annotation.__args__) == set(variants.QUANTIZE_CHOICES)
    monkeypatch.setenv("PAGELENS_QUANTIZE", "int8")
    monkeypatch.setenv("PAGELENS_COMPILE", "1")
    settings = Settings()
    assert (settings.quantize, settings.compile) == ("int8", True)
    loaded = []
    monkeypatch.setattr(Embedder, "load", lambda model, **kwargs: loaded.append(kwargs))
    load_embedder(settings)
    assert (loaded[0]["quantize"], loaded[0]["compile"]) == ("int8", True)

    with pytest.raises(ValidationError, match="quantize"):
        Settings(quantize="int4")
    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.append(app))
    monkeypatch.setattr("pagelens.api.create_app", lambda settings: settings)
    result = CliRunner().invoke(app, ["serve", "--model", "m", "--quantize", "none", "--no-compile"])
    assert result.exit_code == 0, result.output
    assert (served[0].quantize, served[0].compile) == ("none", False)  # flags beat the environment
    monkeypatch.setenv("PAGELENS_QUANTIZE", "int4")
    result = CliRunner().invoke(app, ["serve", "--model", "m"])
    assert result.exit_code == 2 and "error: setting quantize" in result.output and len(served) == 1
