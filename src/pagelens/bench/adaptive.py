"""`pagelens bench search --adaptive`: the fast mode's default prefetch adapting to a target recall.

On a synthetic collection (bench/synthetic_pages.py; the diverse shape is `--own-concepts 96
--background 0.1`), through the code a server runs (index/collection.py search and
`measure_recall`, service/recall.py's sampler, index/recall.py's adaptation):

1. recall@k of fast vs exact at the starting prefetch, on `queries` held-out queries (offline);
2. a stream of fast searches at the collection's default prefetch, each sampled (rate 1 unless
   `sample` says less) and re-run exactly by the background sampler, until the default has held
   for `settle` samples or `max_queries` ran; every change of the default is a table row;
3. recall@k at the adapted prefetch on the held-out queries (offline), to compare with what the
   collection measured.

Recall figures do not depend on the machine's speed; the searches are not timed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pagelens.bench.report import DEFAULT_DOCS, Report
from pagelens.bench.search_store import DEFAULT_SHAPE, build_store
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.index.collection import Collection
from pagelens.index.recall import PREFETCH_BOUNDS, SEARCH_FILE, AdaptivePrefetch, recall_at_k
from pagelens.service.recall import RecallSampler


def offline_recall(collection: Collection, queries: list[np.ndarray], *, k: int, prefetch: int) -> float:
    """Mean recall@k of fast (at `prefetch`) vs exact search over `queries`, computed directly."""
    recalls = []
    for query in queries:
        fast = collection.store.search(query, k=k, mode="fast", prefetch=prefetch)
        exact = collection.store.search(query, k=k, mode="exact")
        recalls.append(recall_at_k(fast, exact))
    return float(np.mean([r for r in recalls if r is not None]))


def run(
    pages: int = 10_000,
    queries: int = 100,
    k: int = 10,
    start_prefetch: int | None = None,
    min_prefetch: int = PREFETCH_BOUNDS[0],
    target: float = 0.95,
    sample: float = 1.0,
    settle: int = 40,
    max_queries: int = 600,
    store_dir: str | None = None,
    seed: int = 0,
    own_concepts: int = DEFAULT_SHAPE["own_concepts"],
    background: float = DEFAULT_SHAPE["background"],
    json_path: str | None = None,
    docs_path: str | Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    """Run the bench (see the module docstring). `start_prefetch` (default: the store's, 100 on
    Edge) and `min_prefetch` (the adaptation's lower bound, default PREFETCH_BOUNDS' 50) let a
    small corpus start as short of the target as a large one at the default."""
    args = {
        "adaptive": True,
        "pages": pages,
        "queries": queries,
        "k": k,
        "start_prefetch": start_prefetch,
        "min_prefetch": min_prefetch,
        "target": target,
        "max_queries": max_queries,
        "seed": seed,
        "own_concepts": own_concepts,
        "background": background,
    }  # fmt: skip (the command line's options)
    diverse = {"own_concepts": own_concepts, "background": background} != DEFAULT_SHAPE
    report = Report("search-adaptive-diverse" if diverse else "search-adaptive", args, bench="search")
    corpus = SyntheticCorpus(pages, seed=seed, own_concepts=own_concepts, background=background)
    directory = Path(store_dir or f"bench-results/search{'-diverse' if diverse else ''}-store")
    store = build_store(directory, corpus)
    collection_dir = directory / "collection"
    shutil.rmtree(collection_dir, ignore_errors=True)  # no adapted prefetch from an earlier run
    collection = Collection(collection_dir, store, target_recall=target)
    start = store.default_prefetch if start_prefetch is None else start_prefetch
    collection.recall = AdaptivePrefetch(
        collection_dir / SEARCH_FILE, initial=start, target=target, bounds=(min_prefetch, PREFETCH_BOUNDS[1])
    )
    report.describe(
        f"{pages} synthetic ColQwen-sized pages ({own_concepts} concepts of a page's own, {background:.0%} "
        f"background tokens: `pagelens/bench/synthetic_pages.py`), top-{k}, target recall@{k} {target}. Fast searches "
        f"at the collection's default prefetch (starting at {start}, bounds {min_prefetch}..{PREFETCH_BOUNDS[1]}), "
        f"{sample:.0%} of them re-run exactly by the background recall sampler, which adapts the default "
        f"(`pagelens/index/recall.py`); held-out recall: {queries} other queries, fast vs exact, computed directly."
    )
    rng = np.random.default_rng(seed + 7)
    held_out = [corpus.query(int(page), 10**6 + n) for n, page in enumerate(rng.integers(0, pages, size=queries))]
    sampler = RecallSampler(sample, seed=seed, nice=0)  # waited for: at nice 19 a busy machine would starve it
    try:
        before = offline_recall(collection, held_out, k=k, prefetch=start)
        stream = 0
        while stream < max_queries:
            prefetch = collection.recall.prefetch
            query = corpus.query(int(rng.integers(0, pages)), stream)
            hits = collection.search(query, k=k, mode="fast", filter=None)
            sampler.offer(lambda cancelled, q=query, h=hits, p=prefetch: collection.measure_recall(
                q, h, k=k, prefetch=p, filter=None, cancelled=cancelled))  # fmt: skip
            sampler.wait_idle()  # one query at a time: a server would drop samples the queue cannot hold
            stream += 1
            stats = collection.recall.stats()
            if collection.recall.prefetch != prefetch:
                change = collection.recall.history[-1]
                report.add_row({"queries so far": stream, "prefetch": change["from"], "samples": change["samples"],
                                "measured recall@k": change["recall"], "then": change["to"]})  # fmt: skip
            elif stats["samples_at_prefetch"] >= settle and stats["recall_at_prefetch"] >= target:
                report.add_row({"queries so far": stream, "prefetch": stats["prefetch"],
                                "samples": stats["samples_at_prefetch"],
                                "measured recall@k": stats["recall_at_prefetch"], "then": "(held)"})  # fmt: skip
                break
        stats = collection.recall.stats()
        after = offline_recall(collection, held_out, k=k, prefetch=stats["prefetch"])
    finally:
        sampler.close()
        collection.close()
    report.figures |= {"sample": sample, "settle": settle}
    report.figures |= {"start_prefetch": start, "recall_at_start": round(before, 4), "queries_streamed": stream,
                       "adapted_prefetch": stats["prefetch"], "measured_recall": stats["recall_at_prefetch"],
                       "measured_samples": stats["samples_at_prefetch"], "held_out_recall": round(after, 4),
                       "prefetch_changes": len(collection.recall.history)}  # fmt: skip
    reached = min(after, stats["recall_at_prefetch"] or 0) >= target
    report.note(
        f"recall@{k} at the starting prefetch {start}: {before:.3f} (held-out, offline); after {stream} sampled "
        f"fast searches the default prefetch is {stats['prefetch']}, where the collection measured "
        f"{stats['recall_at_prefetch']} over {stats['samples_at_prefetch']} samples; held-out at that prefetch: "
        f"{after:.3f} -> target {target} {'reached' if reached else 'NOT reached'}"
    )
    return report.finish(Path(json_path) if json_path else None, Path(docs_path) if docs_path else None)
