"""Live recall in the collection service (fake model, real Qdrant Edge collections): a fast search
without `prefetch` runs, and is sampled, at the collection's adapted default, kept across a
restart; one that names its prefetch is sampled at it and leaves the default alone; collections
whose fast mode is exact (single vectors on Edge) are never sampled."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import fake_runtime


def runtime_for(data_dir, backend: FakeBackend):
    return fake_runtime(backend, settings=Settings(model="fake/model", data_dir=str(data_dir), recall_sample=1.0))


def test_a_fast_search_runs_and_is_sampled_at_the_adapted_default_kept_across_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    runtime = runtime_for(tmp_path, FakeBackend(dim=128))
    service = runtime.collections
    try:
        summary = asyncio.run(service.create("c"))
        assert summary["fast_search"]["prefetch"] == 100 and summary["fast_search"]["samples"] == 0
        pages = [rng.standard_normal((30, 128)).astype(np.float32) for _ in range(40)]
        service.index().get("c").store.add_document("a" * 32, pages)
    finally:
        runtime.close()
    (tmp_path / "c" / "search.json").write_text(json.dumps({"prefetch": 321, "short_at": 214}))  # as adapted

    runtime = runtime_for(tmp_path, FakeBackend(dim=128))
    service = runtime.collections
    try:
        assert asyncio.run(service.info("c"))["fast_search"]["prefetch"] == 321
        hits = asyncio.run(service.search("c", "revenue", k=5, mode="fast"))
        assert len(hits) == 5
        service.recall_sampler.wait_idle()
        stats = asyncio.run(service.info("c"))["fast_search"]
        assert stats["samples"] == 1 and stats["samples_at_prefetch"] == 1  # measured at the default, 321
        assert stats["recall"] == 1.0  # 40 pages, all of them candidates: the fast search is exact here
        asyncio.run(service.search("c", "revenue", k=5, mode="fast", prefetch=7))
        asyncio.run(service.search("c", "revenue", k=5, mode="exact"))  # exact searches are never sampled
        service.recall_sampler.wait_idle()
        stats = asyncio.run(service.info("c"))["fast_search"]
        assert stats["samples"] == 2 and stats["samples_at_prefetch"] == 1 and stats["prefetch"] == 321
        report = service.recall_report()
        assert report["collections"]["c"]["samples"] == 2 and report["sampler"]["checked"] == 2
    finally:
        runtime.close()


def test_collections_whose_fast_mode_is_exact_are_not_sampled(tmp_path):
    runtime = runtime_for(tmp_path, FakeBackend(dim=32, multi_vector=False))
    service = runtime.collections
    try:
        assert asyncio.run(service.create("single"))["fast_search"] is None
        service.index().get("single").store.add_document("b" * 32, [np.ones(32, dtype=np.float32)])
        assert len(asyncio.run(service.search("single", "revenue", k=1, mode="fast"))) == 1
        assert service.recall_sampler.stats()["sampled"] == 0
        assert service.recall_report()["collections"] == {}
    finally:
        runtime.close()
