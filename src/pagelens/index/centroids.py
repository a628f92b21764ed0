"""The fast mode's prefilter: every searchable page's centroids in RAM, narrowed in two cuts.

Each page has POOLED_ROWS k-means centroids of its token rows (index/pages.py `cluster_pool`),
stored in the mirror file after its rows. In RAM a page keeps two summaries:

- `rows`: its POOLED_ROWS centroids in int8 with one float32 scale for the page (`quantize_pages`): 16 KiB;
- `coarse`: COARSE_ROWS k-means centroids of those, int8 with a scale of their own, centroid-major: 4 KiB.

A query (`best`) is a MaxSim against the coarse rows of every searchable page, keeping `wanted` x
max(SHORTLIST, COARSE_KEEP_SHARE x the searchable pages) of them, then against those pages' int8
centroids, keeping `wanted` (the search's prefetch), which the mirror scores exactly. The coarse
cut is what loses recall as a collection grows or its pages diversify (100k bench pages: the true
top-10's rank by the coarse rows has p90 ~3000, ~15,600 on the diverse corpus; by the int8
centroids p90 18 and 49), so it keeps a share of the pages rather than a fixed number, and that
share grows with the prefetch: a prefetch is the search's effort in both cuts, and the live-recall
loop (index/recall.py), which moves only the prefetch, widens the coarse cut with it.

Both cuts multiply int8 codes: the query's rows are quantized too (one scale a row), and
`torch._int_mm` (oneDNN's VNNI int8 kernels on an AVX512 CPU) gives exact int32 dot products, ~3x
as fast as bfloat16 on widened codes (229 vs 709 us a block of 256 pages, 2 Zen 4 cores). With one
scale a page rather than a row, a page's best row for a query row is the largest int32 product,
so the max over a page's rows runs on integers and the scales apply once a page (query row scale
x page scale); the fine cut of 8000 pages took 13.6 ms this way against 34.4 ms with bfloat16 and
a scale a row. A scale a page makes the codes of a page's smaller rows coarser; the exact
rescoring of the prefetch (index/mirror.py) does not depend on them.
Pages stored before the 128-centroid layout have 64, repeated here to POOLED_ROWS rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pagelens.index.pages import DIM, POOLED_ROWS
from pagelens.index.scratch import Scratch

COARSE_ROWS = 32  # centroids of a page's centroids, for the coarse cut (24: recall 0.950, 32: 0.963 at 10k)
SHORTLIST = 20  # per page the fine cut keeps (the prefetch), the coarse cut keeps SHORTLIST pages ...
COARSE_KEEP_SHARE = 0.0008  # ... or this share of the searchable pages, whichever is more (8% at prefetch 100)
FINE_PAGES = 256  # the fine cut scores the shortlist's centroids this many pages at a time (512: 40 vs 32 ms at 100k)
LOAD_PAGES = 1024  # pages read and summarized at a time when loading
SPARE_SHARE = 0.125  # a load that outgrows the matrix reserves this share more slots, so the next ones copy nothing
GATHER_PAGES = 4096  # a coarse cut over few of the pages reads their rows this many pages at a time
CENTROID_BYTES_PER_PAGE = (POOLED_ROWS + COARSE_ROWS) * DIM + 2 * 4  # 20 KiB a page: int8 codes, 2 float32 scales


def available_memory_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, lowered to the cgroup's
    limit minus its usage where one is set (a container); None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def coarse_pool(centroids: torch.Tensor, clusters: int = COARSE_ROWS, iterations: int = 4) -> torch.Tensor:
    """`clusters` k-means centroids of each page's centroids, as `cluster_pool` makes them but batched:
    `(pages, POOLED_ROWS, 128)` -> `(pages, clusters, 128)` bfloat16."""
    rows = centroids.float()
    pages = torch.arange(len(rows))
    seeds = [torch.zeros(len(rows), dtype=torch.long)]
    nearest = torch.einsum("pnd,pd->pn", rows, rows[:, 0])
    for _ in range(clusters - 1):  # farthest-first, per page
        seeds.append(nearest.argmin(1))
        nearest = torch.maximum(nearest, torch.einsum("pnd,pd->pn", rows, rows[pages, seeds[-1]]))
    means = torch.stack([rows[pages, seed] for seed in seeds], dim=1)
    for _ in range(iterations):
        members = torch.nn.functional.one_hot(torch.bmm(rows, means.transpose(1, 2)).argmax(2), clusters).float()
        sums = torch.bmm(members.transpose(1, 2), rows)
        means = torch.where(members.sum(1, keepdim=True).transpose(1, 2) > 0, sums, means)
        means = means / means.norm(dim=2, keepdim=True).clamp(min=1e-12)
    return means.to(torch.bfloat16)


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of `(q, 128)` rows (a query), one scale a row: `(codes (q, 128) int8,
    scales (q,) float32)` with rows ~ codes * scales (each row's largest component maps to +-127)."""
    rows = rows.float()
    scales = rows.abs().amax(-1).clamp(min=1e-12) / 127
    return torch.round(rows / scales.unsqueeze(-1)).clamp(-127, 127).to(torch.int8), scales


def quantize_pages(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of pages' `(pages, r, 128)` rows, one scale a page: `(codes (pages, r,
    128) int8, scales (pages,) float32)` with rows ~ codes * scale (a page's largest component
    maps to +-127)."""
    rows = rows.float()
    scales = rows.abs().amax((1, 2)).clamp(min=1e-12) / 127
    return torch.round(rows / scales.view(-1, 1, 1)).clamp(-127, 127).to(torch.int8), scales


def maxsim_int8(query: tuple[torch.Tensor, torch.Tensor], codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Approximate MaxSim of a query, `quantize_rows` output, against `quantize_pages` output,
    `(pages, r, 128)` int8 codes and `(pages,)` float32 scales: `(pages,)` float32."""
    query_codes, query_scales = query
    pages, per_page, _ = codes.shape
    products = torch._int_mm(query_codes, codes.view(-1, DIM).T)  # (q, pages x r) int32, exact
    best = products.view(len(query_codes), pages, per_page).amax(2)
    return (best.float() * query_scales.unsqueeze(1)).sum(0) * scales


def coarse_keep(wanted: int, searchable: int) -> int:
    """Pages the coarse cut keeps for a fine cut keeping `wanted` of `searchable` pages (at most
    all of them): 2000 at prefetch 100 up to 25k pages, 8% of the pages beyond; twice that at
    prefetch 200."""
    return min(searchable, int(wanted * max(SHORTLIST, COARSE_KEEP_SHARE * searchable)))


def maxsim_centroid_major(
    query: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """Approximate MaxSim of a query, `quantize_rows` output, against int8 rows laid out `(r,
    pages, 128)` (a view of the first pages of a larger matrix is fine) with `(pages,)` float32
    scales: `(pages,)` float32. One `(q, pages)` int8 matmul per centroid row, folded into a
    running max. Against one matmul over all r x pages rows and a max over its `(q, r, pages)`
    output, this never materializes that output (128 MB a query at 100k pages): 58 vs 97 ms at
    100k pages in bfloat16, even at 10k (6.8 vs 7.0); a batched matmul over the view took 10x as
    long."""
    query_codes, query_scales = query
    best = torch._int_mm(query_codes, rows[0].T)
    for row in rows[1:]:
        torch.maximum(best, torch._int_mm(query_codes, row.T), out=best)
    return (best.float() * query_scales.unsqueeze(1)).sum(0) * scales


class CentroidMatrix:
    """Every searchable page's centroids in RAM (see the module docstring): `rows`, `(slots,
    POOLED_ROWS, 128)` int8 with `scales`, `(slots,)` float32, and `coarse`, `(COARSE_ROWS, slots,
    128)` int8, centroid-major, with `coarse_scales`, `(slots,)` float32. Kept up to date without rebuilding: new
    pages are staged and written into spare slots at the next `load` (a load that outgrows them
    copies the matrix once, into one SPARE_SHARE larger), removed ones are masked out (`alive`),
    and the dead slots are squeezed out once they are a quarter."""

    def __init__(self) -> None:
        self.points = np.zeros(0, dtype=np.int64)  # the point id in each slot
        self.alive = torch.zeros(0, dtype=torch.bool)
        # the slots' storage, spare slots included; `rows`, `scales` and `coarse` view the used ones
        self._rows = torch.zeros((0, POOLED_ROWS, DIM), dtype=torch.int8)
        self._scales = torch.zeros(0, dtype=torch.float32)
        self._coarse = torch.zeros((COARSE_ROWS, 0, DIM), dtype=torch.int8)
        self._coarse_scales = torch.zeros(0, dtype=torch.float32)
        self._slot: dict[int, int] = {}
        self._staged: dict[int, None] = {}  # ordered set

    @property
    def rows(self) -> torch.Tensor:
        return self._rows[: len(self.points)]

    @property
    def scales(self) -> torch.Tensor:
        return self._scales[: len(self.points)]

    @property
    def coarse(self) -> torch.Tensor:
        return self._coarse[:, : len(self.points)]

    @property
    def coarse_scales(self) -> torch.Tensor:
        return self._coarse_scales[: len(self.points)]

    @property
    def capacity(self) -> int:
        """Slots held, used or spare."""
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        """RAM the used slots take (spare slots take none until written)."""
        return sum(t.nbytes for t in (self.rows, self.scales, self.coarse, self.coarse_scales))

    def stage(self, point: int) -> None:
        self.remove(point)
        self._staged[point] = None

    def remove(self, point: int) -> None:
        self._staged.pop(point, None)
        slot = self._slot.pop(point, None)
        if slot is not None:
            self.alive[slot] = False

    def load(self, read: Callable[[list[int]], list[torch.Tensor]]) -> None:
        """Append the staged pages, `read(points)` giving each one's `(p, 128)` centroids (p <=
        POOLED_ROWS: older pages have fewer; their rows are repeated to POOLED_ROWS, which changes
        no MaxSim). Pages are read and summarized LOAD_PAGES at a time, so loading 100k pages
        needs little more RAM than the result."""
        if self._staged:
            points = list(self._staged)
            self._staged.clear()
            first, total = len(self.points), len(self.points) + len(points)
            if total > self.capacity:
                slots = total + int(SPARE_SHARE * total)
                self._rows, self._scales = self._grown(self.rows, 0, slots), self._grown(self.scales, 0, slots)
                self._coarse = self._grown(self.coarse, 1, slots)
                self._coarse_scales = self._grown(self.coarse_scales, 0, slots)
            for start in range(0, len(points), LOAD_PAGES):
                part = self._summarize(read(points[start : start + LOAD_PAGES]))
                at = slice(first + start, first + start + len(part[0]))
                self._rows[at], self._scales[at], self._coarse[:, at], self._coarse_scales[at] = part
            self.points = np.concatenate([self.points, np.asarray(points, dtype=np.int64)])
            self.alive = torch.cat([self.alive, torch.ones(len(points), dtype=torch.bool)])
            self._slot.update((point, first + i) for i, point in enumerate(points))
        dead = len(self.points) - len(self._slot)
        if dead and dead * 4 >= len(self.points):
            keep = self.alive.nonzero().squeeze(1)
            self._rows, self._scales, self.alive = self.rows[keep], self.scales[keep], self.alive[keep]
            self._coarse, self._coarse_scales = self.coarse[:, keep].contiguous(), self.coarse_scales[keep]
            self.points = self.points[keep.numpy()]
            self._slot = {int(point): slot for slot, point in enumerate(self.points)}

    @staticmethod
    def _grown(held: torch.Tensor, axis: int, slots: int) -> torch.Tensor:
        """A tensor like `held` with `slots` along `axis` (the slot axis), starting with `held`'s;
        the slots after them are left unset (nothing reads a slot before a load writes it), so
        the spare ones take no RAM until written."""
        grown = held.new_empty((*held.shape[:axis], slots, *held.shape[axis + 1 :]))
        grown.narrow(axis, 0, held.shape[axis]).copy_(held)
        return grown

    @staticmethod
    def _summarize(centroids: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Pages' `(p, 128)` centroids -> their int8 codes and scales and their coarse rows' codes
        (centroid-major) and scales, shaped as the matrix holds them."""
        slot_rows = torch.arange(POOLED_ROWS)
        full = [rows if len(rows) == POOLED_ROWS else rows[slot_rows % len(rows)] for rows in centroids]
        pages = torch.stack(full).to(torch.bfloat16)
        codes, scales = quantize_pages(pages)
        coarse_codes, coarse_scales = quantize_pages(coarse_pool(pages))
        return codes, scales, coarse_codes.transpose(0, 1), coarse_scales

    def dequantized(self, slot: int) -> torch.Tensor:
        """Slot `slot`'s centroids as held, `(POOLED_ROWS, 128)` float32."""
        return self.rows[slot].float() * self.scales[slot]

    def best(self, query: torch.Tensor, wanted: int, searchable: torch.Tensor, scratch: Scratch) -> torch.Tensor:
        """Slots of the `wanted` searchable pages whose centroids best match a `(q, 128)` bfloat16
        query, best first: the coarse and fine cuts of the module docstring."""
        query_codes = quantize_rows(query)
        candidates = searchable.nonzero().squeeze(1)
        keep = coarse_keep(wanted, len(candidates))
        if len(candidates) > keep:
            coarse = self._coarse_scores(query_codes, candidates, scratch)
            candidates = candidates[torch.topk(coarse, keep).indices.sort().values]  # file order reads faster
        return candidates[torch.topk(self.fine_scores(query_codes, candidates, scratch), wanted).indices]

    def fine_scores(
        self, query: tuple[torch.Tensor, torch.Tensor], slots: torch.Tensor, scratch: Scratch
    ) -> torch.Tensor:
        """The int8 centroids' MaxSim of `slots` for a `quantize_rows` query, gathered FINE_PAGES
        pages at a time: `(len(slots),)` float32."""
        scores = torch.empty(len(slots))
        for start in range(0, len(slots), FINE_PAGES):
            part = slots[start : start + FINE_PAGES]
            codes = scratch.take("centroids", (len(part), POOLED_ROWS, DIM), torch.int8)
            torch.index_select(self.rows, 0, part, out=codes)
            scores[start : start + len(part)] = maxsim_int8(query, codes, self.scales[part])
        return scores

    def _coarse_scores(
        self, query: tuple[torch.Tensor, torch.Tensor], slots: torch.Tensor, scratch: Scratch
    ) -> torch.Tensor:
        """The coarse rows' MaxSim of `slots` (ascending) for a `quantize_rows` query:
        `(len(slots),)` float32. One pass over every page when `slots` are most of them, else
        their rows gathered GATHER_PAGES at a time."""
        if 2 * len(slots) >= self.coarse.shape[1]:
            return maxsim_centroid_major(query, self.coarse, self.coarse_scales)[slots]
        scores = torch.empty(len(slots))
        for start in range(0, len(slots), GATHER_PAGES):
            part = slots[start : start + GATHER_PAGES]
            block = scratch.take("coarse", (COARSE_ROWS, len(part), DIM), torch.int8)
            torch.index_select(self.coarse, 1, part, out=block)
            scores[start : start + len(part)] = maxsim_centroid_major(query, block, self.coarse_scales[part])
        return scores
