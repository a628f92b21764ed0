"""The Edge store's vector files (the mirror): the same rankings as Qdrant Edge's own MaxSim, each
page's vectors stored once (the shard keeps payloads), a lost file refused at open (or rebuilt
from the shard in the earlier layout that kept vectors there too), and never serving a page the
shard no longer has."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pagelens.errors import BackendFailure, Conflict
from pagelens.index.edge_store import EdgePageStore
from pagelens.index.mirror import Location, VectorMirror
from pagelens.index.pages import POOLED_ROWS, cluster_pool
from pagelens.index.scoring import maxsim
from pagelens.index.scratch import SCRATCH
from tests.index.test_store import fp16, query_like, structured_pages


def ranking(hits) -> list[tuple[str, int]]:
    return [(hit.document_id, hit.page) for hit in hits]


@pytest.fixture
def edge_store(tmp_path):
    store = EdgePageStore(tmp_path / "store")
    yield store
    store.close()


def test_mirror_ranks_and_scores_as_qdrant_edge_does(tmp_path):
    edge_store = EdgePageStore(tmp_path / "store", keep_vectors_in_shard=True)  # Qdrant Edge's MaxSim needs them
    pages = structured_pages(40, tokens=100, seed=4)
    edge_store.add_document("x", pages[:25], metadata={"part": "one"})
    edge_store.add_document("y", pages[25:], metadata={"part": "two"})
    for seed in range(3):
        query = query_like(pages[seed * 13], seed)
        for mode, options in (("exact", {}), ("fast", {"prefetch": 40}), ("exact", {"filter": {"part": "two"}})):
            mirrored = edge_store.search(query, k=10, mode=mode, **options)
            native = edge_store.qdrant_search(query, k=10, mode=mode, **options)
            assert ranking(mirrored) == ranking(native), (mode, options)
            np.testing.assert_allclose([h.score for h in mirrored], [h.score for h in native], atol=2e-3)
            assert mirrored[0].metadata == native[0].metadata
    edge_store.close()


def test_a_new_store_keeps_each_pages_vectors_once_in_its_files(edge_store):
    pages = structured_pages(8, tokens=90, seed=3)
    edge_store.add_document("doc", pages)
    config = json.loads((edge_store.directory / "edge_config.json").read_text())
    assert config["vectors"] == {} and not edge_store.vectors_in_shard  # the shard holds payloads only
    assert edge_store.mirror.file_rows == 8 * (90 + POOLED_ROWS)
    for number, page in edge_store.iter_pages("doc"):  # reads come from the files, exactly as stored
        np.testing.assert_array_equal(page, fp16(pages[number - 1]))
    vectors, layout = edge_store.read_page("doc", 5)
    np.testing.assert_array_equal(vectors, fp16(pages[4]))
    assert layout is None
    with pytest.raises(Conflict, match="keeps no vectors"):
        edge_store.qdrant_search(query_like(pages[0], 0), k=3)


def test_a_store_whose_vector_file_was_lost_is_refused_at_open_naming_what_is_missing(tmp_path):
    store = EdgePageStore(tmp_path / "store")
    store.add_document("report", structured_pages(4, tokens=60, seed=2))
    store.close()
    (tmp_path / "store.mirror" / "vectors.f16").write_bytes(b"")  # cut outside pagelens
    with pytest.raises(BackendFailure, match=r"lack the rows of 4 stored pages \(of documents report\)"):
        EdgePageStore(tmp_path / "store")


def test_a_lost_mirror_is_copied_back_from_a_shard_that_keeps_the_vectors_too(tmp_path):
    pages = structured_pages(12, tokens=90, seed=5)
    store = EdgePageStore(tmp_path / "store", keep_vectors_in_shard=True)
    store.add_document("doc", pages)
    query = query_like(pages[3], 0)
    before = ranking(store.search(query, k=5))
    store.close()
    (tmp_path / "store.mirror" / "vectors.f16").write_bytes(b"")  # lost, or cut short
    reopened = EdgePageStore(tmp_path / "store")  # the layout is the shard's own, whatever is asked
    try:
        assert reopened.vectors_in_shard and reopened.recopied_on_open == 12
        assert ranking(reopened.search(query, k=5)) == before
        hit = reopened.search(query, k=1)[0]
        assert abs(hit.score - maxsim(query, fp16(pages[hit.page - 1]))) < 1e-3
    finally:
        reopened.close()
    again = EdgePageStore(tmp_path / "store")  # the copied rows' locations were recorded
    assert again.recopied_on_open == 0
    again.close()


def test_deleted_and_replaced_pages_leave_the_mirror(edge_store):
    pages = structured_pages(6, tokens=80, seed=6)
    edge_store.add_document("a", pages[:4])
    edge_store.add_document("a", pages[:2])  # a shorter version: pages 3 and 4 are gone
    edge_store.add_document("b", pages[4:])
    query = query_like(pages[3], 1)
    assert {(h.document_id, h.page) for h in edge_store.search(query, k=10)} == {("a", 1), ("a", 2), ("b", 1), ("b", 2)}
    edge_store.delete_document("b")
    assert {h.document_id for h in edge_store.search(query, k=10, mode="fast")} == {"a"}
    assert len(edge_store.mirror) == 2


def test_unpublished_rows_are_never_searched(tmp_path):
    mirror = VectorMirror(tmp_path)
    page = structured_pages(1, tokens=70)[0]
    location = mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16))
    assert location == Location(0, 70) and mirror.holds(location) and mirror.file_rows == 70 + POOLED_ROWS
    query = query_like(page, 0)
    assert mirror.search(query, 3, fast=False, prefetch=10) == []
    mirror.publish(7, location)
    [(point, score)] = mirror.search(query, 3, fast=True, prefetch=10)
    assert point == 7 and abs(score - maxsim(query, fp16(page))) < 1e-4
    assert mirror.search(query, 3, fast=True, prefetch=10, allowed={8}) == []


def test_centroid_matrix_appends_masks_and_squeezes_without_rebuilding():
    from pagelens.index.centroids import CentroidMatrix

    matrix, reads = CentroidMatrix(), []

    def read(points):
        reads.append(list(points))
        return [torch.full((POOLED_ROWS, 128), float(point), dtype=torch.float16) for point in points]

    for point in range(8):
        matrix.stage(point)
    matrix.load(read)
    assert reads == [list(range(8))] and matrix.alive.all() and len(matrix.points) == 8
    matrix.remove(3)
    matrix.stage(5)  # a new version of page 5: its old slot dies, the new one is appended
    matrix.load(read)
    assert reads[-1] == [5] and len(matrix.points) == 9 and int(matrix.alive.sum()) == 7
    assert set(matrix.points[matrix.alive.numpy()].tolist()) == {0, 1, 2, 4, 5, 6, 7}
    matrix.remove(0)
    matrix.load(read)  # 3 of 9 slots dead: squeezed out
    assert len(matrix.points) == 6 and matrix.alive.all()
    held = [float(matrix.dequantized(slot)[0, 0]) for slot in range(len(matrix.points))]
    assert held == pytest.approx(matrix.points.tolist(), rel=1e-2)  # each slot still holds its own page
    assert len(matrix.scales) == matrix.coarse.shape[1] == 6
    matrix.load(read)
    assert len(reads) == 2  # nothing staged since: nothing read


def test_fast_search_through_the_coarse_first_cut_finds_the_exact_top_hits(tmp_path):
    from pagelens.index.centroids import COARSE_ROWS, SHORTLIST, coarse_pool

    mirror = VectorMirror(tmp_path)
    pages = structured_pages(240, tokens=120, seed=7)
    for point, page in enumerate(pages):
        mirror.publish(point, mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16)))
    mirror.warm()
    assert mirror._centroids.coarse.shape == (COARSE_ROWS, 240, 128)  # centroid-major
    prefetch = 4
    assert SHORTLIST * prefetch < 240  # the first cut runs
    recalls = []
    for seed in range(6):
        query = query_like(pages[seed * 31], seed)
        exact = mirror.search(query, 5, fast=False, prefetch=0)
        fast = mirror.search(query, 5, fast=True, prefetch=prefetch)
        assert fast[0] == exact[0]  # the best page, with its exact score
        recalls.append(len({p for p, _ in fast} & {p for p, _ in exact}) / 5)
    assert np.mean(recalls) >= 0.8, recalls
    centroids = torch.from_numpy(np.stack([cluster_pool(p) for p in pages[:3]])).to(torch.bfloat16)
    coarse = coarse_pool(centroids).float()
    assert coarse.shape == (3, COARSE_ROWS, 128)
    assert torch.allclose(coarse.norm(dim=2), torch.ones(3, COARSE_ROWS), atol=1e-2)
    # every centroid is near one of its page's coarse rows (they summarize, not replace, the page)
    assert (torch.bmm(centroids.float(), coarse.transpose(1, 2)).amax(2) > 0.5).float().mean() > 0.9


def test_fast_search_scores_the_shortlist_in_chunks_as_in_one_block(tmp_path, monkeypatch):
    import pagelens.index.centroids as centroids_module
    import pagelens.index.mirror as mirror_module

    mirror = VectorMirror(tmp_path)
    pages = structured_pages(60, tokens=90, seed=8)
    for point, page in enumerate(pages):
        mirror.publish(point, mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16)))
    queries = [query_like(pages[seed * 7], seed) for seed in range(4)]
    whole = [mirror.search(query, 5, fast=True, prefetch=12) for query in queries]
    monkeypatch.setattr(centroids_module, "FINE_PAGES", 7)  # 60 pages' centroids in 9 chunks
    monkeypatch.setattr(mirror_module, "CHUNK_ROWS", 200)  # and exact scoring ~3 pages at a time
    assert [mirror.search(query, 5, fast=True, prefetch=12) for query in queries] == whole


def test_reused_buffers_never_leak_rows_between_searches(tmp_path):
    """A big search grows the scratch buffers; a smaller one after it must see only its own rows."""
    mirror = VectorMirror(tmp_path)
    pages = structured_pages(30, tokens=150, seed=9)
    for point, page in enumerate(pages):
        mirror.publish(point, mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16)))
    query = query_like(pages[4], 0)
    mirror.search(query, 30, fast=False, prefetch=0)
    for allowed in ({4}, {1, 2}, set(range(0, 30, 3))):
        for fast in (False, True):
            hits = mirror.search(query, 10, fast=fast, prefetch=10, allowed=allowed)
            assert len(hits) == min(len(allowed), 10) and {point for point, _ in hits} <= allowed
            for point, score in hits:
                assert abs(score - maxsim(query, fp16(pages[point]))) < 1e-4


def test_the_bfloat16_copy_older_stores_kept_is_removed_on_open(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "vectors.bf16").write_bytes(b"\0" * 256)
    VectorMirror(tmp_path / "mirror").close()
    assert sorted(p.name for p in (tmp_path / "mirror").iterdir()) == ["vectors.f16"]


def test_back_to_back_spans_of_one_file_are_read_as_one_run():
    from pagelens.index.mirror import merge_adjacent

    spans = [(0, 0, 5), (0, 5, 9), (0, 10, 12), (1, 12, 14), (1, 14, 15), (0, 15, 16)]
    assert merge_adjacent(spans) == [(0, 0, 9), (0, 10, 12), (1, 12, 15), (0, 15, 16)]
    assert merge_adjacent([]) == []


def test_rows_appended_after_a_search_are_read_through_a_fresh_map(tmp_path):
    mirror = VectorMirror(tmp_path)
    pages = structured_pages(3, tokens=50, seed=12)
    query = query_like(pages[2], 0)
    for point, page in enumerate(pages):  # each search maps the file; the next append grows it past the map
        mirror.publish(point, mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16)))
        [(best, score)] = mirror.search(query, 1, fast=False, prefetch=0, allowed={point})
        assert best == point and abs(score - maxsim(query, fp16(page))) < 1e-4


def test_concurrent_searches_of_two_stores_share_buffers_safely(tmp_path):
    """Threads searching two collections at once (each store serializes its own calls, the buffer
    pool is shared) get exactly what each search gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [EdgePageStore(tmp_path / name) for name in ("one", "two")]
    try:
        for number, store in enumerate(stores):
            pages = structured_pages(30, tokens=60 + 40 * number, seed=20 + number)
            store.add_document("d", pages)
        jobs = [
            (store, query_like(structured_pages(30, tokens=60 + 40 * n, seed=20 + n)[i], i), mode)
            for n, store in enumerate(stores)
            for i in range(0, 30, 5)
            for mode in ("exact", "fast")
        ]
        alone = [ranking_and_scores(store.search(query, k=5, mode=mode, prefetch=8)) for store, query, mode in jobs]
        with ThreadPoolExecutor(max_workers=6) as pool:
            together = list(
                pool.map(lambda job: ranking_and_scores(job[0].search(job[1], k=5, mode=job[2], prefetch=8)), jobs * 3)
            )
        assert together == alone * 3
    finally:
        for store in stores:
            store.close()


def ranking_and_scores(hits) -> list[tuple[str, int, float]]:
    return [(hit.document_id, hit.page, hit.score) for hit in hits]


def test_a_store_written_with_64_centroids_a_page_loads_and_searches_beside_new_pages(tmp_path, monkeypatch):
    """Pages stored before the 128-centroid layout have 64 centroid rows and `[offset, rows]` payloads."""
    import pagelens.index.edge_store as store_module
    from pagelens.index.pages import LEGACY_POOLED_ROWS, POOLED_VECTOR, page_vectors

    def legacy_vectors(number, vectors):
        return page_vectors(number, vectors) | {
            POOLED_VECTOR: cluster_pool(vectors, LEGACY_POOLED_ROWS).astype(np.float16)
        }

    pages = structured_pages(12, tokens=90, seed=13)
    with monkeypatch.context() as old_layout:
        old_layout.setattr(store_module, "page_vectors", legacy_vectors)
        old_layout.setattr(Location, "to_payload", lambda self: [self.offset, self.rows])
        store = EdgePageStore(tmp_path / "store")
        store.add_document("old", pages[:6])
        store.close()
    store = EdgePageStore(tmp_path / "store")
    try:
        assert store.recopied_on_open == 0  # the old locations were understood
        store.add_document("new", pages[6:])
        assert store.mirror.file_rows == 12 * 90 + 6 * LEGACY_POOLED_ROWS + 6 * POOLED_ROWS
        for number, page in enumerate(pages):
            query = query_like(page, number)
            for mode in ("exact", "fast"):
                best = store.search(query, k=1, mode=mode, prefetch=3)[0]
                assert (best.document_id, best.page) == (("old", number + 1) if number < 6 else ("new", number - 5))
                assert abs(best.score - maxsim(query, fp16(page))) < 1e-4
    finally:
        store.close()


def test_int8_centroids_keep_the_maxsim_of_the_float_centroids():
    from pagelens.index.centroids import maxsim_int8, quantize_pages, quantize_rows

    pages = structured_pages(12, tokens=200, seed=11)
    centroids = torch.from_numpy(np.stack([cluster_pool(page) for page in pages]))  # (12, 128, 128) float32
    codes, scales = quantize_pages(centroids)
    assert codes.dtype == torch.int8 and scales.shape == (12,) and scales.dtype == torch.float32
    assert int(codes.abs().amax((1, 2)).min()) == 127  # each page's largest component uses the full range
    restored = codes.float() * scales.view(-1, 1, 1)
    assert float((restored - centroids).abs().max()) < 0.01  # half a step of the largest component / 127
    query = torch.from_numpy(query_like(pages[3], 0))
    query_codes, query_scales = quantize_rows(query.to(torch.bfloat16))
    assert query_codes.shape == query.shape and int(query_codes.abs().amax(1).min()) == 127
    exact = torch.stack([(query @ page.T).amax(1).sum() for page in centroids])
    approximate = maxsim_int8((query_codes, query_scales), codes, scales)
    assert approximate.shape == (12,) and approximate.dtype == torch.float32
    assert torch.allclose(approximate, exact, rtol=0.02) and int(approximate.argmax()) == int(exact.argmax())
    # the integer products are exact: the approximation is the codes', not the matmul's
    products = (query_codes.double() @ codes.double().view(-1, 128).T).view(len(query), 12, -1).amax(2)
    assert torch.allclose(approximate.double(), (products * query_scales.double().unsqueeze(1)).sum(0) * scales)


def test_the_coarse_cut_keeps_a_share_of_many_pages_and_reads_few_pages_rows_gathered(tmp_path, monkeypatch):
    """The coarse cut keeps `wanted` x COARSE_KEEP_SHARE of the searchable pages when that is more
    than SHORTLIST x `wanted` (large collections), so a larger prefetch widens it; a filter leaving
    few pages gathers their coarse rows (GATHER_PAGES at a time) instead of scanning every page's,
    with the same scores."""
    import pagelens.index.centroids as centroids_module

    mirror = VectorMirror(tmp_path)
    pages = structured_pages(240, tokens=120, seed=7)
    for point, page in enumerate(pages):
        mirror.publish(point, mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16)))
    mirror.warm()
    matrix = mirror._centroids
    query = centroids_module.quantize_rows(torch.from_numpy(query_like(pages[0], 0)))
    slots = torch.arange(0, 240, 3)
    whole = centroids_module.maxsim_centroid_major(query, matrix.coarse, matrix.coarse_scales)[slots]
    monkeypatch.setattr(centroids_module, "GATHER_PAGES", 16)  # 80 slots in 5 reads
    with SCRATCH.lease() as scratch:
        assert torch.allclose(matrix._coarse_scores(query, slots, scratch), whole)
    fine_pages = []
    widen = centroids_module.maxsim_int8
    monkeypatch.setattr(
        centroids_module, "maxsim_int8", lambda q, codes, *rest: fine_pages.append(len(codes)) or widen(q, codes, *rest)
    )
    monkeypatch.setattr(centroids_module, "SHORTLIST", 3)
    monkeypatch.setattr(centroids_module, "COARSE_KEEP_SHARE", 0.0625)
    recalls = []
    for seed in range(6):
        query = query_like(pages[seed * 37], seed)
        exact = mirror.search(query, 4, fast=False, prefetch=0)
        fine_pages.clear()
        fast = mirror.search(query, 4, fast=True, prefetch=4)  # the coarse cut keeps 4 x max(3, 0.0625 x 240) = 60
        assert fine_pages == [60] and fast[0] == exact[0]
        recalls.append(len({p for p, _ in fast} & {p for p, _ in exact}) / 4)
    assert np.mean(recalls) >= 0.75, recalls
    fine_pages.clear()
    mirror.search(query, 4, fast=True, prefetch=6)  # a prefetch half again as large widens the cut as much
    assert fine_pages == [90]
    fine_pages.clear()
    mirror.search(query, 4, fast=True, prefetch=20)  # 20 x 15 = 300 > 240: no coarse cut, every page fine-scored
    assert sum(fine_pages) == 240


def test_the_coarse_cut_widens_with_the_prefetch_and_the_collection():
    from pagelens.index.centroids import COARSE_KEEP_SHARE, SHORTLIST, coarse_keep

    assert coarse_keep(100, 10_000) == SHORTLIST * 100 == 2000  # small collections: SHORTLIST per prefetched page
    assert coarse_keep(100, 100_000) == int(100 * COARSE_KEEP_SHARE * 100_000) == 8000  # large: a share of them
    assert coarse_keep(200, 100_000) == 2 * coarse_keep(100, 100_000)  # the effort grows with the prefetch
    assert coarse_keep(400, 1_000_000) > coarse_keep(200, 1_000_000) > coarse_keep(200, 100_000)
    assert coarse_keep(2000, 100_000) == 100_000  # never more than there are
    assert coarse_keep(5, 3) == 3


def test_centroids_load_in_parts_as_in_one(monkeypatch):
    """Loading reads and summarizes LOAD_PAGES pages at a time (bounded RAM at 100k pages); the
    matrix is the same as from one read, appended after pages it already held."""
    import pagelens.index.centroids as centroids_module

    pages = structured_pages(11, tokens=150, seed=12)
    centroids = {point: torch.from_numpy(cluster_pool(page)).to(torch.float16) for point, page in enumerate(pages)}
    matrices, reads = [], []

    def read(points):
        reads.append(list(points))
        return [centroids[point] for point in points]

    for load_pages in (100, 3):
        monkeypatch.setattr(centroids_module, "LOAD_PAGES", load_pages)
        matrix = centroids_module.CentroidMatrix()
        for point in range(4):
            matrix.stage(point)
        matrix.load(read)
        for point in range(4, 11):
            matrix.stage(point)
        matrix.load(read)
        matrices.append(matrix)
    assert reads[2:] == [[0, 1, 2], [3], [4, 5, 6], [7, 8, 9], [10]]
    whole, parts = matrices
    for name in ("rows", "scales", "coarse"):
        assert torch.equal(getattr(whole, name), getattr(parts, name)), name
    assert whole.points.tolist() == list(range(11)) and whole.coarse.shape == (centroids_module.COARSE_ROWS, 11, 128)


def test_pages_added_after_open_fill_spare_slots_without_copying_the_matrix(monkeypatch):
    """A load that outgrows the matrix reserves SPARE_SHARE more slots: the next loads write into
    them (at 100k pages each copy would be ~2.5 GB), and fast search over the partly filled
    matrix ranks as over a matrix built in one load."""
    import pagelens.index.centroids as centroids_module

    monkeypatch.setattr(centroids_module, "SPARE_SHARE", 0.5)
    pages = structured_pages(14, tokens=150, seed=21)
    centroids = {point: torch.from_numpy(cluster_pool(page)).to(torch.float16) for point, page in enumerate(pages)}

    def read(points):
        return [centroids[point] for point in points]

    grown, whole = centroids_module.CentroidMatrix(), centroids_module.CentroidMatrix()
    for point in range(8):
        grown.stage(point)
    grown.load(read)
    assert grown.capacity == 12 and len(grown.points) == 8
    storage = grown._rows.data_ptr(), grown._coarse.data_ptr()
    for point in range(8, 12):
        grown.stage(point)
    grown.load(read)
    assert (grown._rows.data_ptr(), grown._coarse.data_ptr()) == storage  # written in place
    grown.stage(12)
    grown.stage(13)
    grown.load(read)  # 14 > 12 slots: one copy into 14 + 7
    assert grown.capacity == 21 and grown._rows.data_ptr() != storage[0]
    assert grown.nbytes == 14 * centroids_module.CENTROID_BYTES_PER_PAGE  # used slots only
    for point in range(14):
        whole.stage(point)
    whole.load(read)
    for name in ("rows", "scales", "coarse"):
        assert torch.equal(getattr(grown, name), getattr(whole, name)), name
    query = torch.from_numpy(query_like(pages[5], seed=3)).to(torch.bfloat16)
    searchable = torch.ones(14, dtype=torch.bool)
    with SCRATCH.lease() as scratch:
        assert torch.equal(grown.best(query, 4, searchable, scratch), whole.best(query, 4, searchable, scratch))


def test_the_coarse_maxsim_of_a_view_of_the_used_slots_equals_that_of_a_copy():
    from pagelens.index.centroids import maxsim_centroid_major, quantize_pages, quantize_rows

    generator = torch.Generator().manual_seed(4)
    pages = torch.randn((50, 32, 128), generator=generator)
    codes, scales = quantize_pages(pages)
    storage = codes.transpose(0, 1).contiguous()  # (32, 50, 128), centroid-major as the matrix holds it
    query = torch.randn((20, 128), generator=generator).to(torch.bfloat16)
    used = storage[:, :37]
    assert not used.is_contiguous()
    expected = torch.stack([(query.float() @ page.T).amax(1).sum() for page in pages[:37]])
    got = maxsim_centroid_major(quantize_rows(query), used, scales[:37])
    assert torch.equal(got, maxsim_centroid_major(quantize_rows(query), used.contiguous(), scales[:37]))
    assert torch.allclose(got, expected, rtol=2e-2, atol=0.1)
