"""The engine over a real (tiny) colpali-engine model: concurrency and OOM splitting keep every
result equal to embedding that input alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from pagelens.engine import Engine, EngineConfig
from pagelens.models import Embedder
from pagelens.testing import build_tiny_checkpoint
from tests.conftest import make_page


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    directory = build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("colqwen2_5"))
    return Embedder.load(str(directory), device="cpu", dtype="float32")


def alone(embedder: Embedder, kind: str, payload) -> np.ndarray:
    prepared = embedder.prepare_image(payload) if kind == "image" else embedder.prepare_query(payload)
    return embedder.forward(embedder.collate([prepared]))[0]


def test_fifty_concurrent_callers_mixing_images_and_queries(embedder):
    requests = []
    for number in range(50):
        if number % 3 == 0:
            requests.append(("image", [make_page(200 + 13 * number, 260 + 7 * number, number)]))
        else:
            requests.append(("query", [f"question {number}", "revenue " * (number % 7 + 1)]))
    config = EngineConfig(max_batch_images=4, max_batch_queries=16, max_wait_ms=20)
    with Engine(embedder, config) as engine:

        def call(request):
            kind, items = request
            return engine.embed_images(items) if kind == "image" else engine.embed_queries(items)

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(call, requests))
        assert max(engine.stats.batch_sizes) > 1
    for (kind, items), got in zip(requests, results, strict=True):
        for item, vectors in zip(items, got, strict=True):
            expected = alone(embedder, kind, item)
            assert vectors.shape == expected.shape
            assert np.abs(vectors - expected).max() < 1e-4


def test_injected_oom_on_a_batch_of_eight_returns_all_eight(embedder, monkeypatch):
    pages = [make_page(180 + 20 * i, 240, i) for i in range(8)]
    expected = [alone(embedder, "image", page) for page in pages]
    real_forward = embedder.forward
    seen_sizes = []

    def forward_that_ooms_on_big_batches(batch):
        size = batch["input_ids"].shape[0]
        seen_sizes.append(size)
        if size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real_forward(batch)

    monkeypatch.setattr(embedder, "forward", forward_that_ooms_on_big_batches)
    with Engine(embedder, EngineConfig(max_batch_images=8, max_wait_ms=200)) as engine:
        results = engine.embed_images(pages)
    assert seen_sizes[0] == 8 and max(seen_sizes[1:]) <= 4
    for got, want in zip(results, expected, strict=True):
        assert np.abs(got - want).max() < 1e-4


def test_on_a_cpu_pages_go_singly_and_a_batched_modernvbert_page_equals_it_alone(embedder, tmp_path):
    """The engine's default CPU batch is one page (batches were slower on every family measured), and
    where a setting batches them (PAGELENS_MAX_BATCH_IMAGES, a GPU), a ColModernVBert page batched
    with others of other sizes equals that page embedded alone."""
    modernvbert = Embedder.load(str(build_tiny_checkpoint("colmodernvbert", tmp_path)), device="cpu", dtype="float32")
    assert Engine(modernvbert).config.max_batch_images == Engine(embedder).config.max_batch_images == 1
    pages = [make_page(300 + 40 * i, 400, i) for i in range(4)]
    with Engine(modernvbert, EngineConfig.for_backend(modernvbert, max_batch_images=4)) as engine:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda page: engine.embed_images([page])[0], pages))
        assert max(engine.stats.batch_sizes) > 1
    for page, vectors in zip(pages, results, strict=True):
        assert np.abs(vectors - alone(modernvbert, "image", page)).max() < 1e-4
