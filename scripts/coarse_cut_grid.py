"""Which of the fast mode's two cuts loses the true top-k on a bench store, and the recall each
(coarse cut size, prefetch) pair would give, from real scores rather than timed searches.

For each query (drawn as `pagelens bench search` draws them, from a random target page): every
page's exact MaxSim (the store's mirror), its coarse-row score and its int8-centroid score
(index/centroids.py, the same kernels the fast mode runs); then where the exact top-k rank by each
first-stage score, and for each pair the share of the exact top-k that survives both cuts (what the
fast mode returns, since it rescores the survivors exactly). Not timed; ~7 s a query at 100k pages.

    ./scripts/uv.sh run python scripts/coarse_cut_grid.py STORE_DIR --pages 100000 \\
        --own-concepts 96 --background 0.1 --queries 40

STORE_DIR is a `pagelens bench search --store-dir` directory holding that corpus.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pagelens.bench.search import bench_queries
from pagelens.bench.synthetic_pages import SyntheticCorpus
from pagelens.index.centroids import CentroidMatrix, maxsim_centroid_major, maxsim_int8, quantize_rows
from pagelens.index.edge_store import EdgePageStore

BLOCK = 1024  # pages whose int8 centroids are scored at a time


def ranks(scores: np.ndarray) -> np.ndarray:
    """Each page's rank by `scores`, 0 the best."""
    order = np.argsort(-scores, kind="stable")
    placed = np.empty_like(order)
    placed[order] = np.arange(len(order))
    return placed


def fine_scores(matrix: CentroidMatrix, query: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Every slot's int8-centroid MaxSim of a `quantize_rows` query: `(slots,)` float32."""
    scores = []
    for start in range(0, len(matrix.points), BLOCK):
        block = slice(start, start + BLOCK)
        scores.append(maxsim_int8(query, matrix.rows[block], matrix.scales[block]))
    return torch.cat(scores).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store_dir", type=Path)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--own-concepts", type=int, default=24)
    parser.add_argument("--background", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--keeps", default="2000,4000,8000,16000,24000,32000,50000")
    parser.add_argument("--prefetches", default="50,100,200,400,800")
    args = parser.parse_args()
    corpus = SyntheticCorpus(args.pages, seed=args.seed, own_concepts=args.own_concepts, background=args.background)
    store = EdgePageStore(args.store_dir / "store")
    store.mirror.warm()
    matrix = store.mirror._centroids  # the fast mode's in-RAM centroids, as a search reads them
    points = matrix.points.tolist()
    keeps = [int(k) for k in args.keeps.split(",")] + [len(points)]
    prefetches = [int(p) for p in args.prefetches.split(",")]
    survived = np.zeros((len(keeps), len(prefetches)))
    coarse_ranks, fine_ranks = [], []
    for query in bench_queries(corpus, args.queries, args.seed):
        truth = np.argsort(-store.mirror.exact_scores(query, points), kind="stable")[: args.k]
        codes = quantize_rows(torch.from_numpy(query.astype(np.float32)).to(torch.bfloat16))
        coarse = maxsim_centroid_major(codes, matrix.coarse, matrix.coarse_scales).numpy()
        fine = fine_scores(matrix, codes)
        coarse_ranks += ranks(coarse)[truth].tolist()
        fine_ranks += ranks(fine)[truth].tolist()
        by_coarse = np.argsort(-coarse, kind="stable")
        for i, keep in enumerate(keeps):
            kept = by_coarse[:keep]
            by_fine = kept[np.argsort(-fine[kept], kind="stable")]
            for j, prefetch in enumerate(prefetches):
                survived[i, j] += len(np.intersect1d(by_fine[:prefetch], truth)) / args.k
    store.close()
    survived /= args.queries
    print(f"rank of the exact top-{args.k} ({args.queries} queries), p50 / p90 / p99:")
    print("  by the coarse rows:    ", np.percentile(coarse_ranks, [50, 90, 99]).round().astype(int).tolist())
    print("  by the int8 centroids: ", np.percentile(fine_ranks, [50, 90, 99]).round().astype(int).tolist())
    print(f"\nrecall@{args.k} | " + " | ".join(f"prefetch {p}" for p in prefetches))
    for keep, row in zip(keeps, survived, strict=True):
        print(f"keep {keep} | " + " | ".join(f"{value:.3f}" for value in row))


if __name__ == "__main__":
    main()
