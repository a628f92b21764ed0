"""Time the fast mode's first stage by stage on a synthetic centroid matrix of N pages.

    ./scripts/uv.sh run --frozen python scripts/time_fast_search_stages.py --pages 100000

Fills a `CentroidMatrix` through its own `load` with random unit centroids (the timings do not
depend on the values), then times, over the same queries: quantizing the query, the coarse cut
(every page's COARSE_ROWS int8 rows), its top-k, the fine cut (`CentroidMatrix.fine_scores` over
the kept pages) and `CentroidMatrix.best` whole, for each prefetch. Prints the median ms of
each; the stages should add up to about the whole. The exact rescoring of the prefetch that follows
reads the mirror file and is timed by `pagelens bench search`, not here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pagelens.index.centroids import CentroidMatrix, coarse_keep, maxsim_centroid_major, quantize_rows
from pagelens.index.pages import DIM, POOLED_ROWS
from pagelens.index.scratch import Scratch


def random_centroids(points: list[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(points[0])
    rows = torch.randn(len(points), POOLED_ROWS, DIM, generator=generator)
    return list(torch.nn.functional.normalize(rows, dim=-1))


def median_ms(run, queries: list[torch.Tensor]) -> float:
    times = []
    for query in queries:
        start = time.perf_counter()
        run(query)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument("--query-tokens", type=int, default=20)
    parser.add_argument("--prefetch", default="50,100,200,300")
    args = parser.parse_args()
    torch.set_num_threads(2)

    matrix = CentroidMatrix()
    for point in range(args.pages):
        matrix.stage(point)
    start = time.perf_counter()
    matrix.load(random_centroids)
    print(f"{args.pages} pages loaded in {time.perf_counter() - start:.1f} s, {matrix.nbytes / 1e9:.2f} GB")

    generator = torch.Generator().manual_seed(1)
    queries = [
        torch.nn.functional.normalize(torch.randn(args.query_tokens, DIM, generator=generator), dim=-1).bfloat16()
        for _ in range(args.queries)
    ]
    searchable = torch.ones(args.pages, dtype=torch.bool)
    scratch = Scratch()
    codes = [quantize_rows(query) for query in queries]
    coarse_scores = maxsim_centroid_major(codes[0], matrix.coarse, matrix.coarse_scales)

    coarse_ms = median_ms(lambda q: maxsim_centroid_major(q, matrix.coarse, matrix.coarse_scales), codes)
    print(f"quantize the query: {median_ms(quantize_rows, queries):.2f} ms; coarse cut: {coarse_ms:.1f} ms")
    print("| prefetch | pages kept | top-k of the coarse scores ms | fine cut ms | stages ms | best() ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for prefetch in (int(p) for p in args.prefetch.split(",")):
        keep = coarse_keep(prefetch, args.pages)
        kept = torch.topk(coarse_scores, keep).indices.sort().values
        topk_ms = median_ms(lambda _, keep=keep: torch.topk(coarse_scores, keep).indices.sort(), codes)
        fine_ms = median_ms(lambda q, kept=kept: matrix.fine_scores(q, kept, scratch), codes)
        whole_ms = median_ms(lambda q, wanted=prefetch: matrix.best(q, wanted, searchable, scratch), queries)
        stages = coarse_ms + topk_ms + fine_ms
        print(f"| {prefetch} | {keep} | {topk_ms:.1f} | {fine_ms:.1f} | {stages:.1f} | {whole_ms:.1f} |")


if __name__ == "__main__":
    main()
