"""Hierarchical token pooling of page embeddings (colpali-engine's HierarchicalTokenPooler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

from pagelens.engine import Engine
from pagelens.errors import ModelLoadError
from pagelens.models import Embedder
from pagelens.testing import build_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("colqwen2_5"))


def test_pool_factor_pools_pages_only_and_equals_colpali_engine_pooler(checkpoint, pages):
    plain = Embedder.load(str(checkpoint), device="cpu", dtype="float32")
    pooled = Embedder.load(str(checkpoint), device="cpu", dtype="float32", pool_factor=3)
    assert pooled.info.pool_factor == 3
    with Engine(plain) as engine:
        full_pages = engine.embed_images(pages)
        (full_query,) = engine.embed_queries(["quarterly revenue"])
    with Engine(pooled) as engine:
        pooled_pages = engine.embed_images(pages)
        (pooled_query,) = engine.embed_queries(["quarterly revenue"])
    np.testing.assert_allclose(pooled_query, full_query, atol=1e-6)  # queries are never pooled
    expected = HierarchicalTokenPooler().pool_embeddings(
        [torch.from_numpy(page) for page in full_pages], pool_factor=3, padding=False
    )
    for full, got, want in zip(full_pages, pooled_pages, expected, strict=True):
        assert got.shape[0] <= max(full.shape[0] // 3, 1) + 1 < full.shape[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_pooling_is_refused_for_single_vector_models_and_bad_factors(tmp_path):
    bi = build_tiny_checkpoint("biqwen2_5", tmp_path / "bi")
    with pytest.raises(ModelLoadError, match="multi-vector"):
        Embedder.load(str(bi), device="cpu", dtype="float32", pool_factor=2)
    with pytest.raises(ModelLoadError, match=">= 2"):
        Embedder.load(str(build_tiny_checkpoint("colqwen2_5", tmp_path / "col")), device="cpu", pool_factor=1)
