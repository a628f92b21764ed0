"""The fast mode's adaptive default prefetch (index/recall.py): when it moves, how far, within what
bounds, what is stored for a restart, and which samples count."""

from __future__ import annotations

import json

import pytest

from pagelens.index.pages import SearchHit
from pagelens.index.recall import (
    LOWER_MARGIN,
    MIN_SAMPLES_TO_LOWER,
    MIN_SAMPLES_TO_RAISE,
    PREFETCH_BOUNDS,
    SEARCH_FILE,
    WINDOW,
    AdaptivePrefetch,
    recall_at_k,
)


def hits(*pages: int) -> list[SearchHit]:
    return [SearchHit("a" * 32, page, 1.0) for page in pages]


def feed(adaptive: AdaptivePrefetch, recall: float, count: int, prefetch: int | None = None) -> None:
    for _ in range(count):
        adaptive.record(recall, prefetch=adaptive.prefetch if prefetch is None else prefetch, k=10)


def test_recall_at_k_is_the_share_of_the_exact_top_k_the_fast_search_found():
    assert recall_at_k(hits(1, 2, 3, 4), hits(1, 2, 3, 5)) == 0.75
    assert recall_at_k(hits(4, 3, 2, 1), hits(1, 2, 3, 4)) == 1.0  # order does not matter
    assert recall_at_k(hits(), hits(1, 2)) == 0.0
    assert recall_at_k(hits(), hits()) is None  # nothing matched the filter: nothing to miss


def test_a_recall_short_of_the_target_raises_the_prefetch_only_after_enough_samples(tmp_path):
    adaptive = AdaptivePrefetch(tmp_path / SEARCH_FILE, initial=100, target=0.95)
    feed(adaptive, 0.93, MIN_SAMPLES_TO_RAISE - 1)
    assert adaptive.prefetch == 100  # too few samples to judge
    feed(adaptive, 0.93, 1)
    assert adaptive.prefetch == 150  # short by less than FAR_BELOW: x1.5
    assert adaptive.stats()["samples_at_prefetch"] == 0 and adaptive.stats()["samples"] == MIN_SAMPLES_TO_RAISE
    feed(adaptive, 0.5, MIN_SAMPLES_TO_RAISE)
    assert adaptive.prefetch == 300  # far short: x2
    assert json.loads((tmp_path / SEARCH_FILE).read_text())["prefetch"] == 300
    assert adaptive.history == [
        {"from": 100, "to": 150, "recall": 0.93, "samples": MIN_SAMPLES_TO_RAISE},
        {"from": 150, "to": 300, "recall": 0.5, "samples": MIN_SAMPLES_TO_RAISE},
    ]


def test_the_prefetch_stays_within_its_bounds(tmp_path):
    adaptive = AdaptivePrefetch(None, initial=1500, target=0.95)
    feed(adaptive, 0.1, MIN_SAMPLES_TO_RAISE * 3)
    assert adaptive.prefetch == PREFETCH_BOUNDS[1]
    low = AdaptivePrefetch(None, initial=10, target=0.95)
    assert low.prefetch == PREFETCH_BOUNDS[0]  # a store default below the bounds is lifted to them
    feed(low, 1.0, MIN_SAMPLES_TO_LOWER * 3)
    assert low.prefetch == PREFETCH_BOUNDS[0]


def test_a_recall_well_above_target_lowers_the_prefetch_slowly_but_never_back_to_one_found_short(tmp_path):
    kept = AdaptivePrefetch(None, initial=400, target=0.9)
    feed(kept, 0.9 + LOWER_MARGIN - 0.001, MIN_SAMPLES_TO_LOWER * 2)
    assert kept.prefetch == 400  # at target, not comfortably above: kept
    adaptive = AdaptivePrefetch(None, initial=400, target=0.9)
    feed(adaptive, 0.99, MIN_SAMPLES_TO_LOWER - 1)
    assert adaptive.prefetch == 400
    feed(adaptive, 0.99, 1)
    assert adaptive.prefetch == 360  # x0.9
    feed(adaptive, 0.8, MIN_SAMPLES_TO_RAISE)
    assert adaptive.prefetch == 720  # 360 fell short by more than FAR_BELOW: x2
    for _ in range(20):
        feed(adaptive, 0.99, MIN_SAMPLES_TO_LOWER)
    assert adaptive.prefetch == 361  # lowered step by step, stopping above the 360 that fell short


def test_searches_that_named_their_own_prefetch_are_measured_but_never_move_the_default():
    adaptive = AdaptivePrefetch(None, initial=100, target=0.95)
    feed(adaptive, 0.2, MIN_SAMPLES_TO_RAISE * 2, prefetch=30)
    assert adaptive.prefetch == 100
    stats = adaptive.stats()
    assert stats["recall"] == 0.2 and stats["samples"] == MIN_SAMPLES_TO_RAISE * 2
    assert stats["recall_at_prefetch"] is None and stats["samples_at_prefetch"] == 0
    feed(adaptive, 1.0, WINDOW)
    assert adaptive.stats()["recall"] == 1.0 and adaptive.stats()["samples"] == WINDOW  # only the last WINDOW


def test_the_adapted_prefetch_survives_a_restart_and_a_bad_record_falls_back_to_the_default(tmp_path, caplog):
    path = tmp_path / SEARCH_FILE
    adaptive = AdaptivePrefetch(path, initial=100, target=0.95)
    feed(adaptive, 0.5, MIN_SAMPLES_TO_RAISE)
    assert AdaptivePrefetch(path, initial=100, target=0.95).prefetch == 200
    restarted = AdaptivePrefetch(path, initial=100, target=0.95)
    for _ in range(10):
        feed(restarted, 1.0, MIN_SAMPLES_TO_LOWER)
    assert restarted.prefetch == 101  # the prefetch found short before the restart is still remembered
    path.write_text('{"prefetch": "lots"}')
    assert AdaptivePrefetch(path, initial=100, target=0.95).prefetch == 100
    assert "unreadable" in caplog.text
    assert AdaptivePrefetch(tmp_path / "absent.json", initial=200, target=0.95).prefetch == 200


def test_a_recall_outside_0_1_is_refused():
    with pytest.raises(ValueError):
        AdaptivePrefetch(None, initial=100).record(1.5, prefetch=100, k=10)


def test_the_stepped_exact_scan_equals_the_exact_search_with_and_without_a_filter(tmp_path):
    import numpy as np

    from pagelens.index.edge_store import EdgePageStore

    rng = np.random.default_rng(5)
    store = EdgePageStore(tmp_path / "store")
    try:
        for number in range(4):
            pages = [rng.standard_normal((20, 128)).astype(np.float32) for _ in range(5)]
            store.add_document(f"{number:032x}", pages, metadata={"team": "x" if number % 2 else "y"})
        query = rng.standard_normal((6, 128)).astype(np.float32)
        for where in (None, {"team": "x"}):
            exact = store.search(query, k=7, mode="exact", filter=where)
            stepped = store.exact_search_in_steps(query, k=7, filter=where, pages_per_step=3)
            assert [(h.document_id, h.page) for h in stepped] == [(h.document_id, h.page) for h in exact]
            assert [h.score for h in stepped] == pytest.approx([h.score for h in exact], abs=1e-6)
        steps = []
        assert (
            store.exact_search_in_steps(
                query, k=7, pages_per_step=3, cancelled=lambda: steps.append(1) or len(steps) > 2
            )
            is None
        )
        assert len(steps) == 3  # checked before each step, given up at the third
    finally:
        store.close()


def test_measure_recall_reruns_a_fast_search_exactly_on_every_store(store):
    """Edge (stepped scan), qdrant-client's local mode, and a real Qdrant server when one is set."""
    import numpy as np

    from pagelens.index.recall import measure_recall

    rng = np.random.default_rng(9)
    for number in range(3):
        pages = [rng.standard_normal((12, 128)).astype(np.float32) for _ in range(4)]
        store.add_document(f"{number:032x}", pages, metadata={"team": "x" if number % 2 else "y"})
    query = rng.standard_normal((5, 128)).astype(np.float32)
    adaptive = AdaptivePrefetch(None, initial=100)
    exact = store.search(query, k=3, mode="exact", filter={"team": "y"})
    assert measure_recall(store, adaptive, query, exact, k=3, prefetch=100, filter={"team": "y"}) == 1.0
    assert measure_recall(store, adaptive, query, exact[:1], k=3, prefetch=100, filter={"team": "y"}) == 1 / 3
    missing = measure_recall(store, adaptive, query, [], k=3, prefetch=100, filter={"team": "nobody"})
    assert missing is None  # nothing matches: nothing to miss, nothing recorded
    stats = adaptive.stats()
    assert stats["samples"] == 2 and stats["recall"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
