"""A collection whose fast-mode centroids would not fit in the memory available is refused when it
opens, with the figures, rather than loaded until the kernel kills the process."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.errors import BackendFailure
from pagelens.index import centroids
from pagelens.index.centroids import CENTROID_BYTES_PER_PAGE, available_memory_bytes
from pagelens.index.collections import Collections
from pagelens.index.edge_store import EdgePageStore


def unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, 128)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_available_memory_is_read_on_this_machine():
    available = available_memory_bytes()
    assert available is not None and 0 < available < 1 << 50


def test_a_collection_too_large_for_the_memory_available_is_refused_at_open_naming_the_figures(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    collections = Collections(tmp_path)
    collection = collections.create("big")
    collection.store.add_document("d" * 32, [unit_rows(rng, 40) for _ in range(6)])
    collections.close()
    needed = 6 * CENTROID_BYTES_PER_PAGE  # 120 KiB
    monkeypatch.setattr(centroids, "available_memory_bytes", lambda: needed - 1)
    with pytest.raises(BackendFailure) as refused:
        Collections(tmp_path).get("big")
    message = str(refused.value)
    assert "6 pages" in message and f"{needed / 2**30:.2f} GiB" in message and "20.0 KiB a page" in message
    assert "is available" in message and "PAGELENS_QDRANT_URL" in message and str(tmp_path / "big") in message
    monkeypatch.setattr(centroids, "available_memory_bytes", lambda: needed)  # exactly enough
    store = EdgePageStore(tmp_path / "big" / "store")  # the refused open let go of the shard
    assert store.page_count() == 6 and store.mirror.centroid_bytes == needed
    store.close()
