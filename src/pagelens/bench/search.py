"""`pagelens bench search`: exact and fast search latency and recall on an embedded collection.

Builds (or reuses) an Edge page store of synthetic ColQwen-sized pages and a plain file of the
same float16 rows (bench/search_store.py), then:

- ground truth: every query's brute-force float32 MaxSim over the rows file in one pass
  (bench/brute_force.py: streamed, so 100k pages need no 36 GB of RAM);
- times, in the same run, each query on its own: the brute force over the rows file (read as the
  store's exact search reads its mirror), `exact` and `fast` (at each prefetch size) through
  `EdgePageStore.search`, the path HTTP search takes, with recall@k of fast against exact;
- Qdrant Edge's own exact MaxSim (`qdrant_search`) on a few queries, where the store still has it;
- the store's disk by part and against the float16 vectors, and the RAM of a process that opens it;
- the issue bars, each on a line of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pagelens.bench.brute_force import BruteForceScan, ground_truth, top_k
from pagelens.bench.report import DEFAULT_DOCS, Report
from pagelens.bench.search_store import (
    DEFAULT_SHAPE,
    BuildTimes,
    build_store,
    disk_figures,
    memory_figures,
    page_index,
    rows_file,
)
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.errors import InvalidInput
from pagelens.index.edge_store import EdgePageStore

WARMUP = 3
BRUTE_FORCE = "brute force (file, float32)"
NATIVE = "Qdrant Edge exact (native)"
NATIVE_DEFAULT_MAX_PAGES = 50_000  # above, Qdrant Edge's own MaxSim takes too long to run by default
RAM_BAR_BYTES = 4 * 10**9  # issue #16: search structures <= 4 GB (read as 10^9 bytes: the stricter)
DISK_BAR = 1.2  # issue #16: the store's disk <= 1.2x the float16 vectors
EXACT_BAR = 1.5  # issue #16: exact p50 <= 1.5x the brute force


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) * 1000


def native_queries(pages: int, asked: int | None) -> int:
    """How many queries Qdrant Edge's own MaxSim runs: as asked, else 3 below NATIVE_DEFAULT_MAX_PAGES
    pages and none from there (a query scans every page's vectors in Qdrant Edge: ~1.5 s at 10k)."""
    if asked is not None:
        return asked
    return 3 if pages < NATIVE_DEFAULT_MAX_PAGES else 0


def bench_queries(corpus: SyntheticCorpus, count: int, seed: int) -> list[np.ndarray]:
    """The queries this bench searches with: `count` `(20, 128)` float32 queries, each drawn from a
    random target page of `corpus` (the targets seeded by `seed` + 1)."""
    targets = np.random.default_rng(seed + 1).integers(0, corpus.pages, size=count)
    return [corpus.query(target, number) for number, target in enumerate(targets.tolist())]


def run(
    pages: int = 10_000,
    queries: int = 100,
    k: int = 10,
    prefetch: tuple[int, ...] = (50, 100, 200),
    qdrant_queries: int | None = None,
    brute_queries: int = 20,
    store_dir: str | None = None,
    seed: int = 0,
    own_concepts: int = DEFAULT_SHAPE["own_concepts"],
    background: float = DEFAULT_SHAPE["background"],
    threads: int | None = None,
    workers: int | None = None,
    json_path: str | None = None,
    docs_path: str | Path | None = DEFAULT_DOCS,
) -> dict:
    """Run the bench; `docs_path=None` leaves the docs alone. A corpus of other than the default
    shape (`own_concepts`, `background`) reports as `search-diverse`, with its own store, JSON and
    docs section. `qdrant_queries` defaults to 3 below NATIVE_DEFAULT_MAX_PAGES pages, else 0;
    `brute_queries`: how many of the queries the brute force is timed on (a full scan costs the
    same for every query; the ground truth covers all of them); `workers`: page-generating
    processes for a build (default: one fewer than the cores)."""
    if min(pages, queries, brute_queries) < 1:
        raise InvalidInput(
            f"pages, queries and brute queries must be at least 1, got {pages}, {queries}, {brute_queries}"
        )
    if threads:
        torch.set_num_threads(threads)
    qdrant_queries = native_queries(pages, qdrant_queries)
    brute_queries = min(brute_queries, queries)
    args = {"pages": pages, "queries": queries, "k": k, "prefetch": ",".join(map(str, prefetch)),
            "qdrant_queries": qdrant_queries, "brute_queries": brute_queries, "seed": seed,
            "own_concepts": own_concepts, "background": background}  # fmt: skip
    shape = {"own_concepts": own_concepts, "background": background}
    diverse = shape != DEFAULT_SHAPE
    name = "search-diverse" if diverse else "search"
    report = Report(name, args, bench="search")
    corpus = SyntheticCorpus(pages, seed=seed, own_concepts=own_concepts, background=background)
    distinct = np.mean([corpus.distinct_concepts(i) for i in range(min(pages, 200))])
    report.describe(
        f"{pages} synthetic ColQwen-sized pages (600-800 x 128 unit vectors, float16 in the store; concept clusters "
        "with Zipf popularity, shared background and per-document topics: `pagelens/bench/synthetic_pages.py`; "
        f"{own_concepts} concepts of a page's own, {background:.0%} background tokens, ~{distinct:.0f} distinct "
        f"concepts per page), {queries} queries of 20 tokens drawn from random target pages, top-{k}, torch threads "
        f"{torch.get_num_threads()}. Ground truth: brute-force float32 MaxSim over a plain file of the same float16 "
        "rows, streamed (`pagelens/bench/brute_force.py`: all queries in one pass); the brute-force row times "
        f"{brute_queries} of the queries one at a time over that file, read as exact search reads the store's mirror."
    )
    directory = Path(store_dir or f"bench-results/{name}-store")
    build = BuildTimes()
    started = time.perf_counter()
    store = build_store(directory, corpus, workers=workers, times=build)
    report.figures["store_seconds"] = round(time.perf_counter() - started, 1)
    report.figures["store_build"] = build.as_figures()
    report.figures |= disk_figures(store, corpus)
    store.close()  # a fresh process opens it alone: the RAM a server pays for this collection
    report.figures["memory"] = memory_figures(directory / "store")
    store = EdgePageStore(directory / "store")
    store.mirror.warm()
    report.figures["centroid_ram_bytes"] = store.mirror.centroid_bytes
    timings: dict[str, list[float]] = {BRUTE_FORCE: [], "exact": []}
    timings |= {f"fast, prefetch {p}": [] for p in prefetch}
    recalls: dict[str, list[float]] = {}
    queries_ = bench_queries(corpus, queries, seed)

    def timed(name: str, search, on: list[np.ndarray] = queries_, warmup: int = WARMUP) -> list[list[int]]:
        """Run `search` on each of `on` in a row (a pass per configuration, as a server would see
        them, after `warmup` untimed queries); record each time; return each query's top-k page indices."""
        for query in on[-warmup:] if warmup else []:
            search(query)
        ranked = []
        for query in on:
            clock = time.perf_counter()
            ranked.append(search(query))
            timings[name].append(time.perf_counter() - clock)
        return ranked

    def store_search(**options):
        return lambda query: [page_index(h, corpus.pages_per_document) for h in store.search(query, k=k, **options)]

    try:
        reference = rows_file(directory, corpus)
        clock = time.perf_counter()
        truth = [top_k(scores, k) for scores in ground_truth(reference, queries_)]
        report.figures["ground_truth_seconds"] = round(time.perf_counter() - clock, 1)
        brute = BruteForceScan(reference)
        timed_brute = timed(BRUTE_FORCE, lambda q: top_k(brute.scores(q), k), queries_[:brute_queries], warmup=1)
        brute_agrees = sum(b == t for b, t in zip(timed_brute, truth, strict=False))
        exact = timed("exact", store_search())
        exact_agrees = sum(e == t for e, t in zip(exact, truth, strict=True))
        for size in prefetch:
            name = f"fast, prefetch {size}"
            fast = timed(name, store_search(mode="fast", prefetch=size))
            recalls[name] = [len(set(f) & set(e)) / k for f, e in zip(fast, exact, strict=True)]
        native = run_native(store, queries_[:qdrant_queries], k)
    finally:
        store.close()
    if native is not None:
        timings[NATIVE] = native
    brute_p50 = percentile(timings[BRUTE_FORCE], 50)
    for name, samples in timings.items():
        row = {"search": name, "queries": len(samples), "p50 ms": percentile(samples, 50),
               "p95 ms": percentile(samples, 95), "p50 / brute force": percentile(samples, 50) / brute_p50}  # fmt: skip
        if recalls.get(name):
            row[f"recall@{k} vs exact"] = float(np.mean(recalls[name]))
            row["worst query"] = float(np.min(recalls[name]))
        report.add_row(row)
    report.figures["exact_equals_brute_force"] = f"{exact_agrees}/{queries}"
    report.figures["brute_force_timed_equals_one_pass"] = f"{brute_agrees}/{brute_queries}"
    report.note(f"exact top-{k} identical to brute force (order included) on {exact_agrees}/{queries} queries")
    if native is None and qdrant_queries:
        report.note("Qdrant Edge's own MaxSim: not run, this store's layout keeps no page vectors in Qdrant Edge")
    note_costs(report)
    note_bars(report, k, pages, diverse)
    return report.finish(Path(json_path) if json_path else None, Path(docs_path) if docs_path else None)


def run_native(store: EdgePageStore, queries: list[np.ndarray], k: int) -> list[float] | None:
    """Seconds per query of Qdrant Edge's own MaxSim (`qdrant_search`); None when no queries are
    asked for or the store keeps each page's vectors only in its mirror (`vectors_in_shard` false:
    every store created since 2026-12)."""
    if not queries or not store.vectors_in_shard:
        return None
    seconds = []
    for query in queries:
        clock = time.perf_counter()
        store.qdrant_search(query, k=k)
        seconds.append(time.perf_counter() - clock)
    return seconds


def note_costs(report: Report) -> None:
    """The store's disk and RAM figures as notes."""
    figures, gib = report.figures, 2**30
    disk, memory = figures["disk_bytes"], figures["memory"]
    build = figures["store_build"]
    if build["seconds"]:
        report.note(
            f"store built in {build['seconds']:.0f} s: add_document {build['add_document_seconds']:.0f} s, waiting for "
            f"pages from {build['workers']} worker process(es) {build['waiting_for_pages_seconds']:.0f} s, rows file "
            f"{build['rows_file_seconds']:.0f} s"
        )
    report.note(
        f"on disk (allocated): Qdrant Edge shard {disk['shard'] / gib:.3f} GiB "
        f"({figures['apparent_bytes']['shard'] / gib:.2f} GiB by size: sparse log segments), "
        f"vector mirror {disk['mirror'] / gib:.2f} GiB = "
        f"{figures['disk_over_float16_vectors']:.2f}x the float16 vectors ({figures['float16_vector_bytes'] / gib:.2f} "
        "GiB; the brute force's rows file, the same size, is the bench's own and not counted)"
    )
    report.note(
        f"RAM: centroids {figures['centroid_ram_bytes'] / gib:.2f} GiB; a fresh process that opens the store: RSS "
        f"{memory['rss_after_open_bytes'] / gib:.2f} GiB after the open ({memory['rss_before_open_bytes'] / gib:.2f} "
        f"GiB before; {memory['anonymous_rss_after_open_bytes'] / gib:.2f} GiB anonymous, "
        f"{memory['file_rss_after_open_bytes'] / gib:.2f} GiB pages of the vector files read through their "
        f"memory maps, which the kernel may drop), peak {memory['peak_rss_bytes'] / gib:.2f} GiB, "
        f"open {memory['open_seconds']:.1f} s"
    )


def note_bars(report: Report, k: int, pages: int, diverse: bool) -> None:
    """One line per bar: #5's at 10k pages (fast p50 <= 50 ms at recall >= 0.95, default corpus), and
    #16's (100k pages): fast p50 <= 100 ms at recall >= 0.95 (default) / 0.9 (diverse), exact p50 <=
    1.5x the brute force, disk <= 1.2x the float16 vectors, search structures <= 4 GB of RAM."""
    rows = {row["search"]: row for row in report.tables[""]}
    recall = f"recall@{k} vs exact"

    def fast_bar(issue: str, max_ms: float, min_recall: float) -> None:
        good = [r for r in rows.values() if r["search"].startswith("fast") and r.get(recall, 0) >= min_recall]
        if not good:
            report.note(f"bar ({issue}): fast p50 <= {max_ms:.0f} ms at {recall} >= {min_recall}: no prefetch size "
                        f"reached that recall -> NOT met")  # fmt: skip
            return
        best = min(good, key=lambda r: r["p50 ms"])
        report.note(
            f"bar ({issue}): fast p50 <= {max_ms:.0f} ms with {recall} >= {min_recall}: {best['search']} has p50 "
            f"{best['p50 ms']:.1f} ms, recall {best[recall]:.3f} -> {'met' if best['p50 ms'] <= max_ms else 'NOT met'}"
        )

    if not diverse and pages <= 10_000:
        fast_bar("#5, 10k pages", 50, 0.95)
    at = f"#16, 100k pages; this run {pages}"
    fast_bar(at, 100, 0.9 if diverse else 0.95)
    ratio = rows["exact"]["p50 / brute force"]
    report.note(f"bar ({at}): exact p50 <= {EXACT_BAR}x brute force: {ratio:.2f}x -> "
                f"{'met' if ratio <= EXACT_BAR else 'NOT met'}")  # fmt: skip
    disk = report.figures["disk_over_float16_vectors"]
    report.note(f"bar ({at}): disk <= {DISK_BAR}x the float16 vectors: {disk:.2f}x -> "
                f"{'met' if disk <= DISK_BAR else 'NOT met'}")  # fmt: skip
    ram = report.figures["centroid_ram_bytes"]
    report.note(
        f"bar ({at}): search structures <= {RAM_BAR_BYTES / 1e9:.0f} GB of RAM: centroids {ram / 1e9:.2f} GB "
        f"({ram / 2**30:.2f} GiB) -> "
        f"{'met' if ram <= RAM_BAR_BYTES else 'NOT met'} (process RSS after open: "
        f"{report.figures['memory']['rss_after_open_bytes'] / 1e9:.2f} GB)"
    )
