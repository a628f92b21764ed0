"""The query-embedding cache /search and /ask share: a query seen before is not embedded again,
whatever k, mode or filter; another query, or a cache of size 0, is."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pagelens.engine import EngineConfig
from pagelens.rag.cache import QueryEmbeddingCache
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.index.test_pdf import make_pdf


def search_twice(tmp_path, size: int):
    backend = FakeBackend(dim=128)
    settings = Settings(model="fake", data_dir=str(tmp_path / "data"), pdf_dpi=72, query_cache_size=size)
    runtime = Runtime(settings).start(backend, engine_config=EngineConfig(max_wait_ms=1))

    async def scenario():
        service = runtime.collections
        await service.create("docs")
        await service.add_document("docs", make_pdf(3), filename="r.pdf", metadata={})
        before = backend.prepared_count
        first = await service.search("docs", "revenue in 2023", k=3)
        stages: dict[str, float] = {}
        second = await service.search("docs", "revenue in 2023", k=2, mode="fast", stages=stages)
        same = backend.prepared_count - before
        await service.search("docs", "costs in 2023", k=2)
        return first, second, same, backend.prepared_count - before, stages

    try:
        return (*asyncio.run(scenario()), runtime.collections.query_cache)
    finally:
        runtime.close()


def test_a_query_seen_before_is_not_embedded_again(tmp_path):
    first, second, same, total, stages, cache = search_twice(tmp_path, 1024)
    assert same == 1 and total == 2  # the repeated query: no second embedding; another query: embedded
    assert [(h.document_id, h.page) for h in second] == [(h.document_id, h.page) for h in first][:2]
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 2) and set(stages) == {"embed", "search"}


def test_a_cache_of_size_zero_embeds_every_query(tmp_path):
    _first, _second, same, total, _stages, cache = search_twice(tmp_path, 0)
    assert same == 2 and total == 3 and len(cache) == 0


def test_cached_vectors_are_read_only_and_the_least_recent_goes_first():
    cache = QueryEmbeddingCache(2)
    for text in ("a", "b"):
        cache.put("m", text, np.ones((3, 4), dtype=np.float32))
    assert cache.get("m", "a") is not None  # "b" is now the least recent
    cache.put("m", "c", np.zeros((3, 4), dtype=np.float32))
    assert cache.get("m", "b") is None and cache.get("other-model", "a") is None
    with pytest.raises(ValueError):
        cache.get("m", "a")[0, 0] = 5
