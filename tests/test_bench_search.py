"""`pagelens bench search` plumbing on a small synthetic collection: the JSON, the docs section, and
figures that hold whatever the machine's speed (exact equals brute force, recall is a fraction), the
store's disk and RAM figures and the bar lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pagelens.bench.search import native_queries, run
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.errors import InvalidInput
from pagelens.index.centroids import COARSE_ROWS
from pagelens.index.pages import POOLED_ROWS


def test_synthetic_pages_are_deterministic_structured_unit_vectors():
    corpus = SyntheticCorpus(30, seed=3)
    page = corpus.page(4)
    assert page.dtype == np.float32 and page.shape[1] == 128 and 600 <= len(page) < 800
    np.testing.assert_allclose(np.linalg.norm(page, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(page, SyntheticCorpus(30, seed=3).page(4))
    query = corpus.query(4, seed=0)
    assert query.shape == (20, 128)
    scores = [float((query @ corpus.page(i).T).max(axis=1).sum()) for i in range(30)]
    assert int(np.argmax(scores)) == 4  # a query finds the page it was drawn from
    assert (page @ page.T > 0.5).mean() > 0.01  # tokens cluster (0.024 here; unit noise: the diagonal, 0.0014)


def test_bench_search_writes_json_and_refreshes_its_docs_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nprose kept\n\n<!-- bench:search -->\nold figures\n<!-- /bench:search -->\n")
    result = run(pages=60, queries=4, prefetch=(20,), qdrant_queries=1, brute_queries=2, workers=1,
                 store_dir=str(tmp_path / "store"), json_path=str(tmp_path / "search.json"),
                 docs_path=str(docs))  # fmt: skip
    written = json.loads((tmp_path / "search.json").read_text())
    assert written["bench"] == "search" and written["machine"]["cores"] >= 1
    rows = {row["search"]: row for row in written["tables"]["main"]}
    # a new store keeps its vectors in the mirror only, so Qdrant Edge has no MaxSim of its own to time
    assert set(rows) == {"brute force (file, float32)", "exact", "fast, prefetch 20"}
    assert rows["brute force (file, float32)"]["queries"] == 2 and rows["exact"]["queries"] == 4
    figures = written["figures"]
    assert figures["exact_equals_brute_force"] == "4/4" and figures["brute_force_timed_equals_one_pass"] == "2/2"
    assert 0.0 <= rows["fast, prefetch 20"]["recall@10 vs exact"] <= 1.0
    vectors = int(SyntheticCorpus(60).tokens.sum()) * 128 * 2
    assert figures["float16_vector_bytes"] == vectors
    stored_rows = int(SyntheticCorpus(60).tokens.sum()) + 60 * POOLED_ROWS  # a page's tokens, then its centroids
    assert figures["apparent_bytes"]["mirror"] == stored_rows * 128 * 2 == sum(figures["mirror_file_bytes"].values())
    assert stored_rows * 256 <= figures["disk_bytes"]["mirror"] < stored_rows * 256 + 64 * 1024  # blocks, rounded up
    disk = figures["disk_bytes"]["shard"] + figures["disk_bytes"]["mirror"]
    assert figures["disk_over_float16_vectors"] == pytest.approx(disk / vectors, abs=1e-3)
    assert (tmp_path / "store" / "rows.f16").stat().st_size == vectors  # the brute force's own file
    int8_codes, float32_scales = (POOLED_ROWS + COARSE_ROWS) * 128, 2 * 4  # a page's scale for each cut
    assert figures["centroid_ram_bytes"] == 60 * (int8_codes + float32_scales)
    memory = figures["memory"]
    assert memory["centroid_ram_bytes"] == figures["centroid_ram_bytes"]  # the fresh process opened the same store
    assert 0 < memory["rss_before_open_bytes"] < memory["rss_after_open_bytes"] <= memory["peak_rss_bytes"]
    anonymous, mapped = memory["anonymous_rss_after_open_bytes"], memory["file_rss_after_open_bytes"]
    assert anonymous > 0 and mapped > 0 and anonymous + mapped <= memory["rss_after_open_bytes"]
    build = figures["store_build"]
    assert build["workers"] == 1 and 0 < build["add_document_seconds"] <= build["seconds"]
    notes = "\n".join(written["notes"])
    bars = (
        "#5, 10k pages): fast p50 <= 50 ms",
        "fast p50 <= 100 ms with recall@10 vs exact >= 0.95",
        "exact p50 <= 1.5x brute force",
        "disk <= 1.2x the float16 vectors",
        "search structures <= 4 GB",
    )
    assert all(bar in notes for bar in bars)
    text = docs.read_text()
    assert "prose kept" in text and "old figures" not in text and "fast, prefetch 20" in text
    assert result["args"]["pages"] == 60
    again = run(pages=60, queries=2, prefetch=(20,), qdrant_queries=0, store_dir=str(tmp_path / "store"),
                json_path=str(tmp_path / "again.json"), docs_path=None)  # fmt: skip
    assert again["figures"]["store_seconds"] < written["figures"]["store_seconds"]  # the store was reused
    assert again["figures"]["store_build"]["seconds"] == 0 and again["figures"]["exact_equals_brute_force"] == "2/2"


def test_a_store_without_qdrant_side_vectors_skips_the_native_row(tmp_path):
    """Stores that keep each page's vectors only in the mirror (every new one) cannot run Qdrant Edge's MaxSim."""
    result = run(pages=30, queries=2, prefetch=(10,), qdrant_queries=2, workers=0, store_dir=str(tmp_path / "s"),
                 json_path=str(tmp_path / "s.json"), docs_path=None)  # fmt: skip
    assert "Qdrant Edge exact (native)" not in {row["search"] for row in result["tables"]["main"]}
    assert any("Qdrant Edge's own MaxSim: not run" in note for note in result["notes"])


def test_a_bench_without_queries_or_pages_is_refused(tmp_path):
    for options in ({"queries": 0}, {"brute_queries": 0}, {"pages": 0}):
        with pytest.raises(InvalidInput, match="at least 1"):
            run(**{"pages": 10, "queries": 2} | options, store_dir=str(tmp_path), docs_path=None)
    assert list(tmp_path.iterdir()) == []  # refused before anything was built


def test_qdrant_edge_own_maxsim_runs_by_default_only_below_50k_pages():
    assert native_queries(10_000, None) == 3 and native_queries(49_999, None) == 3
    assert native_queries(50_000, None) == 0 and native_queries(100_000, None) == 0
    assert native_queries(100_000, 2) == 2 and native_queries(60, 0) == 0


def test_a_more_diverse_corpus_reports_as_its_own_bench(tmp_path):
    default, diverse = SyntheticCorpus(20), SyntheticCorpus(20, own_concepts=96, background=0.1)
    assert np.mean([diverse.distinct_concepts(i) for i in range(20)]) > 1.5 * np.mean(
        [default.distinct_concepts(i) for i in range(20)]
    )
    docs = tmp_path / "benchmarks.md"
    sections = [f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->" for name, body in
                (("search", "kept"), ("search-diverse", "old"))]  # fmt: skip
    docs.write_text("\n".join(sections) + "\n")
    result = run(pages=40, queries=2, prefetch=(10,), qdrant_queries=0, own_concepts=96, background=0.1,
                 store_dir=str(tmp_path / "s"), json_path=str(tmp_path / "d.json"), docs_path=str(docs))  # fmt: skip
    assert result["bench"] == "search-diverse" and result["args"]["own_concepts"] == 96
    assert (
        result["command"].startswith("pagelens bench search --pages 40 ") and "--own-concepts 96" in result["command"]
    )
    assert "96 concepts of a page's own, 10% background" in result["description"]
    notes = "\n".join(result["notes"])
    assert "recall@10 vs exact >= 0.9:" in notes and "#5" not in notes  # #5's bar is the default corpus'
    text = docs.read_text()
    assert "kept" in text and "old" not in text
