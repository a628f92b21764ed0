"""The fast mode's prefilter: every searchable page's centroids in RAM, narrowed in two cuts.

Each page has POOLED_ROWS k-means centroids of its token rows (index/pages.py `cluster_pool`),
stored in the mirror file after its rows. In RAM a page keeps two summaries:

- `rows`: its POOLED_ROWS centroids in int8, one bfloat16 scale per row (`quantize_rows`): 16.25 KiB;
- `coarse`: COARSE_ROWS k-means centroids of those, bfloat16, centroid-major: 8 KiB.

A query (`best`) is a MaxSim against the coarse rows of every searchable page, keeping `wanted` x
max(SHORTLIST, COARSE_KEEP_SHARE x the searchable pages) of them, then against those pages' int8
centroids, keeping `wanted` (the search's prefetch), which the mirror scores exactly. The coarse
cut is what loses recall as a collection grows or its pages diversify (100k bench pages: the true
top-10's rank by the coarse rows has p90 ~3000, ~15,600 on the diverse corpus; by the int8
centroids p90 18 and 49), so it keeps a share of the pages rather than a fixed number, and that
share grows with the prefetch: a prefetch is the search's effort in both cuts, and the live-recall
loop (index/recall.py), which moves only the prefetch, widens the coarse cut with it. int8
halves the centroids' RAM; torch's CPU int8 matmul is no faster than bfloat16 here, so the codes
are widened to bfloat16 for the pages the fine cut reads (int8 fits bfloat16 exactly).
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
CENTROID_BYTES_PER_PAGE = POOLED_ROWS * (DIM + 2) + COARSE_ROWS * DIM * 2  # 24.25 KiB a page


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
    """Symmetric int8 codes of `(..., 128)` rows, one scale per row: `(codes (..., 128) int8,
    scales (...) bfloat16)` with rows ~ codes * scales (the largest component maps to +-127)."""
    rows = rows.float()
    scales = (rows.abs().amax(-1).clamp(min=1e-12) / 127).to(torch.bfloat16)
    codes = torch.round(rows / scales.float().unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
    return codes, scales


def maxsim_int8(query: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, widened: torch.Tensor) -> torch.Tensor:
    """Approximate MaxSim of a `(q, 128)` bfloat16 query against `quantize_rows` output, `(pages, r,
    128)` int8 codes and `(pages, r)` bfloat16 scales: `(pages,)` float32. `widened` is a `(pages,
    r, 128)` bfloat16 buffer for the codes (int8 fits bfloat16 exactly)."""
    pages, per_page, _ = codes.shape
    widened.copy_(codes)
    similarities = (query @ widened.view(-1, DIM).T).view(len(query), pages, per_page)
    return (similarities * scales).amax(2).float().sum(0)


def coarse_keep(wanted: int, searchable: int) -> int:
    """Pages the coarse cut keeps for a fine cut keeping `wanted` of `searchable` pages (at most
    all of them): 2000 at prefetch 100 up to 25k pages, 8% of the pages beyond; twice that at
    prefetch 200."""
    return min(searchable, int(wanted * max(SHORTLIST, COARSE_KEEP_SHARE * searchable)))


def maxsim_centroid_major(query: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Approximate MaxSim of a `(q, 128)` bfloat16 query against bfloat16 rows laid out `(r, pages,
    128)` (a view of the first pages of a larger matrix is fine): `(pages,)` float32. One `(q,
    pages)` matmul per centroid row, folded into a running max. Against one matmul over all r x
    pages rows and a max over its `(q, r, pages)` output, this never materializes that output (128
    MB a query at 100k pages): 58 vs 97 ms at 100k pages, even at 10k (6.8 vs 7.0); a batched
    matmul over the view took 10x as long."""
    best = query @ rows[0].T
    for row in rows[1:]:
        torch.maximum(best, query @ row.T, out=best)
    return best.float().sum(0)


class CentroidMatrix:
    """Every searchable page's centroids in RAM (see the module docstring): `rows`, `(slots,
    POOLED_ROWS, 128)` int8 with `scales`, `(slots, POOLED_ROWS)` bfloat16, and `coarse`,
    `(COARSE_ROWS, slots, 128)` bfloat16, centroid-major. Kept up to date without rebuilding: new
    pages are staged and written into spare slots at the next `load` (a load that outgrows them
    copies the matrix once, into one SPARE_SHARE larger), removed ones are masked out (`alive`),
    and the dead slots are squeezed out once they are a quarter."""

    def __init__(self) -> None:
        self.points = np.zeros(0, dtype=np.int64)  # the point id in each slot
        self.alive = torch.zeros(0, dtype=torch.bool)
        # the slots' storage, spare slots included; `rows`, `scales` and `coarse` view the used ones
        self._rows = torch.zeros((0, POOLED_ROWS, DIM), dtype=torch.int8)
        self._scales = torch.zeros((0, POOLED_ROWS), dtype=torch.bfloat16)
        self._coarse = torch.zeros((COARSE_ROWS, 0, DIM), dtype=torch.bfloat16)
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
    def capacity(self) -> int:
        """Slots held, used or spare."""
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        """RAM the used slots take (spare slots take none until written)."""
        return sum(t.nbytes for t in (self.rows, self.scales, self.coarse))

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
            for start in range(0, len(points), LOAD_PAGES):
                part = self._summarize(read(points[start : start + LOAD_PAGES]))
                at = slice(first + start, first + start + len(part[0]))
                self._rows[at], self._scales[at], self._coarse[:, at] = part
            self.points = np.concatenate([self.points, np.asarray(points, dtype=np.int64)])
            self.alive = torch.cat([self.alive, torch.ones(len(points), dtype=torch.bool)])
            self._slot.update((point, first + i) for i, point in enumerate(points))
        dead = len(self.points) - len(self._slot)
        if dead and dead * 4 >= len(self.points):
            keep = self.alive.nonzero().squeeze(1)
            self._rows, self._scales, self.alive = self.rows[keep], self.scales[keep], self.alive[keep]
            self._coarse = self.coarse[:, keep].contiguous()
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
    def _summarize(centroids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pages' `(p, 128)` centroids -> their int8 codes and scales and their coarse rows
        (centroid-major), shaped as the matrix holds them."""
        slot_rows = torch.arange(POOLED_ROWS)
        full = [rows if len(rows) == POOLED_ROWS else rows[slot_rows % len(rows)] for rows in centroids]
        pages = torch.stack(full).to(torch.bfloat16)
        codes, scales = quantize_rows(pages)
        return codes, scales, coarse_pool(pages).transpose(0, 1)

    def dequantized(self, slot: int) -> torch.Tensor:
        """Slot `slot`'s centroids as held, `(POOLED_ROWS, 128)` float32."""
        return self.rows[slot].float() * self.scales[slot].float().unsqueeze(1)

    def best(self, query: torch.Tensor, wanted: int, searchable: torch.Tensor, scratch: Scratch) -> torch.Tensor:
        """Slots of the `wanted` searchable pages whose centroids best match a `(q, 128)` bfloat16
        query, best first: the coarse and fine cuts of the module docstring."""
        candidates = searchable.nonzero().squeeze(1)
        keep = coarse_keep(wanted, len(candidates))
        if len(candidates) > keep:
            coarse = self._coarse_scores(query, candidates, scratch)
            candidates = candidates[torch.topk(coarse, keep).indices.sort().values]  # file order reads faster
        fine = torch.empty(len(candidates))
        for start in range(0, len(candidates), FINE_PAGES):
            slots = candidates[start : start + FINE_PAGES]
            codes = scratch.take("centroids", (len(slots), POOLED_ROWS, DIM), torch.int8)
            torch.index_select(self.rows, 0, slots, out=codes)
            widened = scratch.take("widened", (len(slots), POOLED_ROWS, DIM), torch.bfloat16)
            fine[start : start + len(slots)] = maxsim_int8(query, codes, self.scales[slots], widened)
        return candidates[torch.topk(fine, wanted).indices]

    def _coarse_scores(self, query: torch.Tensor, slots: torch.Tensor, scratch: Scratch) -> torch.Tensor:
        """The coarse rows' MaxSim of `slots` (ascending): `(len(slots),)` float32. One pass over
        every page when `slots` are most of them, else their rows gathered GATHER_PAGES at a time."""
        if 2 * len(slots) >= self.coarse.shape[1]:
            return maxsim_centroid_major(query, self.coarse)[slots]
        scores = torch.empty(len(slots))
        for start in range(0, len(slots), GATHER_PAGES):
            part = slots[start : start + GATHER_PAGES]
            block = scratch.take("coarse", (COARSE_ROWS, len(part), DIM), torch.bfloat16)
            torch.index_select(self.coarse, 1, part, out=block)
            scores[start : start + len(part)] = maxsim_centroid_major(query, block)
        return scores
