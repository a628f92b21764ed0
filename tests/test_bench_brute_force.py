"""The search bench's streamed brute force (bench/brute_force.py) and its page workers
(bench/page_workers.py): equal to a dense in-RAM MaxSim, one pass equal to one query at a time,
pages from worker processes equal to the corpus' own, and a page still what it was."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pagelens.bench.brute_force import (
    CHUNK_ROWS,
    BruteForceScan,
    RowsFile,
    RowsWriter,
    chunk_bounds,
    ground_truth,
    top_k,
    write_rows_file,
)
from pagelens.bench.page_workers import corpus_pages
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.errors import InvalidInput


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """60 pages (~42k rows: several chunks) written as a rows file, and the corpus."""
    corpus = SyntheticCorpus(60, seed=5)
    path = tmp_path_factory.mktemp("rows") / "rows.f16"
    assert write_rows_file(path, (corpus.page(i) for i in range(60))) == int(corpus.tokens.sum())
    return corpus, RowsFile(path, corpus.tokens)


def dense_scores(corpus: SyntheticCorpus, query: np.ndarray) -> np.ndarray:
    """MaxSim over every page held in RAM at once, as the bench did before it streamed."""
    rows = np.concatenate([corpus.page(i) for i in range(corpus.pages)]).astype(np.float16).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(corpus.tokens)[:-1]])
    return np.maximum.reduceat(rows @ query.T, starts, axis=0).sum(axis=1)


def test_the_streamed_brute_force_equals_a_dense_computation_in_ram(corpus_file):
    corpus, rows_file = corpus_file
    assert len(rows_file.chunks) > 3  # the pass really crosses chunk boundaries
    scan = BruteForceScan(rows_file)
    for number, target in enumerate((3, 17, 42)):
        query = corpus.query(target, number)
        streamed, dense = scan.scores(query), dense_scores(corpus, query)
        assert streamed.dtype == np.float32 and streamed.shape == (60,)
        np.testing.assert_allclose(streamed, dense, rtol=1e-5)
        assert top_k(streamed, 10) == top_k(dense, 10) and top_k(streamed, 1) == [target]


def test_one_pass_for_all_queries_equals_each_query_on_its_own(corpus_file):
    corpus, rows_file = corpus_file
    queries = [corpus.query(target, number) for number, target in enumerate((0, 8, 30, 59))]
    together = ground_truth(rows_file, queries)
    assert together.shape == (4, 60)
    scan = BruteForceScan(rows_file)
    for number, query in enumerate(queries):
        assert np.array_equal(together[number], scan.scores(query))  # bit for bit: ties break alike


def test_chunks_hold_whole_pages_of_about_chunk_rows():
    counts = np.array([700, 3000, 5000, 100, 8192, 1, 2])
    assert chunk_bounds(counts, 8192) == [(0, 3), (3, 5), (5, 7)]
    assert chunk_bounds(np.array([5]), 8192) == [(0, 1)]
    bounds = chunk_bounds(SyntheticCorpus(200).tokens)
    assert bounds[0][0] == 0 and bounds[-1][1] == 200
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(SyntheticCorpus(200).tokens[a:b].sum() >= CHUNK_ROWS for a, b in bounds[:-1])


def test_a_rows_file_of_the_wrong_size_is_refused(tmp_path):
    corpus = SyntheticCorpus(5)
    path = tmp_path / "rows.f16"
    write_rows_file(path, (corpus.page(i) for i in range(4)))
    with pytest.raises(InvalidInput, match="5 pages"):
        RowsFile(path, corpus.tokens)


def test_an_interrupted_write_leaves_no_rows_file(tmp_path):
    path = tmp_path / "rows.f16"
    with pytest.raises(RuntimeError), RowsWriter(path) as writer:
        writer.write([np.ones((3, 128), dtype=np.float32)])
        raise RuntimeError("the build stopped")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_processes_make_the_corpus_own_pages_in_order(workers):
    corpus = SyntheticCorpus(23, seed=2, own_concepts=96, background=0.1)
    pages = list(corpus_pages(corpus, workers=workers, block=4))
    assert len(pages) == 23
    for i, page in enumerate(pages):
        assert np.array_equal(page, corpus.page(i))


def test_a_page_is_still_what_it_was():
    """Values of pages recorded before page generation moved into worker processes: a page is a pure
    function of (seed, i), so stores and results of earlier runs stay comparable."""
    recorded = {
        (24, 0.35): {7: (792, [-0.0399241, -0.1015367, -0.079413], [-0.068001, 0.0730822, 0.0135514]),
             54321: (767, [-0.0420804, 0.0595376, 0.0551755], [0.1499197, 0.0753103, 0.0360213])},
        (96, 0.1): {7: (792, [0.1521408, 0.1019865, 0.0403316], [0.0703861, -0.044796, -0.136794]),
                    54321: (767, [-0.0486373, 0.1394094, 0.0584344], [0.0821082, 0.1133983, 0.0257914])},
    }  # fmt: skip
    for (own_concepts, background), pages in recorded.items():
        corpus = SyntheticCorpus(100_000, own_concepts=own_concepts, background=background)
        for i, (rows, first, last) in pages.items():
            page = corpus.page(i)
            assert len(page) == rows
            np.testing.assert_allclose(page[0, :3], first, atol=1e-6)
            np.testing.assert_allclose(page[-1, :3], last, atol=1e-6)


def test_a_build_process_gets_one_blas_thread_and_this_process_keeps_its_own(monkeypatch, tmp_path):
    """The store's k-means runs small numpy matmuls, which two BLAS threads on busy cores slow ~20x."""
    import os

    from pagelens.bench import search_store

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    report_threads = f"import json, os; print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))"
    monkeypatch.setattr(search_store, "BUILD_SCRIPT", report_threads)
    seen = search_store._build_in_a_process(tmp_path, SyntheticCorpus(4), workers=0)
    assert seen == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in os.environ
