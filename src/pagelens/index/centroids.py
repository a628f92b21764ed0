"""The fast mode's prefilter: every searchable page's centroids in RAM, narrowed in two cuts.

Each page has POOLED_ROWS k-means centroids of its token rows (index/pages.py `cluster_pool`),
stored in the mirror file after its rows. In RAM they are one `(slots, POOLED_ROWS, 128)` bfloat16
tensor, plus COARSE_ROWS centroids of those centroids per page, centroid-major. A query's first
cut is a MaxSim against the coarse rows of every page, keeping SHORTLIST * `wanted` pages; the
second, against the shortlist's full centroids, keeps `wanted` (at 10k pages, one matmul over
every page's 64 centroids alone took ~35 ms of the 50 ms budget: docs/benchmarks.md, "search").
Pages stored before the 128-centroid layout have 64, repeated here to POOLED_ROWS rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pagelens.index.pages import DIM, POOLED_ROWS
from pagelens.index.scratch import Scratch

COARSE_ROWS = 32  # centroids of a page's centroids, for the fast mode's first cut (24: recall 0.950, 32: 0.963)
SHORTLIST = 20  # the first cut keeps SHORTLIST * prefetch pages
FINE_PAGES = 512  # the second cut scores the shortlist's centroids this many pages at a time
CENTROID_BYTES_PER_PAGE = (POOLED_ROWS + COARSE_ROWS) * DIM * 2  # bfloat16 rows in RAM: 40 KiB a page


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


def maxsim_rows(query: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Approximate MaxSim of a `(q, 128)` bfloat16 query against `(pages, r, 128)` bfloat16 rows: `(pages,)` float32."""
    pages, per_page, _ = rows.shape
    return (query @ rows.view(-1, DIM).T).view(len(query), pages, per_page).amax(2).float().sum(0)


def maxsim_centroid_major(query: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`maxsim_rows` for rows laid out `(r, pages, 128)`: the max runs over r contiguous slabs of
    page scores, which beats reducing r-long runs (~8.5 vs 12 ms at 10k pages x 24 rows)."""
    per_page, pages, _ = rows.shape
    return (query @ rows.view(-1, DIM).T).view(len(query), per_page, pages).amax(1).float().sum(0)


class CentroidMatrix:
    """Every searchable page's centroids in RAM: `rows`, `(slots, POOLED_ROWS, 128)` bfloat16, and
    their `coarse_pool` centroid-major, `coarse`, `(COARSE_ROWS, slots, 128)`. Kept up to date
    without rebuilding: new pages are staged and appended at the next `load`, removed ones are
    masked out (`alive`), and the dead slots are squeezed out once they are a quarter."""

    def __init__(self) -> None:
        self.points = np.zeros(0, dtype=np.int64)  # the point id in each slot
        self.rows = torch.zeros((0, POOLED_ROWS, DIM), dtype=torch.bfloat16)
        self.coarse = torch.zeros((COARSE_ROWS, 0, DIM), dtype=torch.bfloat16)
        self.alive = torch.zeros(0, dtype=torch.bool)
        self._slot: dict[int, int] = {}
        self._staged: dict[int, None] = {}  # ordered set

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
        no MaxSim)."""
        if self._staged:
            points = list(self._staged)
            self._staged.clear()
            first = len(self.points)
            slot_rows = torch.arange(POOLED_ROWS)
            centroids = [rows if len(rows) == POOLED_ROWS else rows[slot_rows % len(rows)] for rows in read(points)]
            added = torch.stack(centroids).to(torch.bfloat16)
            self.rows = torch.cat([self.rows, added])
            coarse = [coarse_pool(part).transpose(0, 1) for part in added.split(1024)]
            self.coarse = torch.cat([self.coarse, *coarse], dim=1)
            self.points = np.concatenate([self.points, np.asarray(points, dtype=np.int64)])
            self.alive = torch.cat([self.alive, torch.ones(len(points), dtype=torch.bool)])
            self._slot.update((point, first + i) for i, point in enumerate(points))
        dead = len(self.points) - len(self._slot)
        if dead and dead * 4 >= len(self.points):
            keep = self.alive.nonzero().squeeze(1)
            self.rows, self.alive = self.rows[keep], self.alive[keep]
            self.coarse = self.coarse[:, keep].contiguous()
            self.points = self.points[keep.numpy()]
            self._slot = {int(point): slot for slot, point in enumerate(self.points)}

    def best(self, query: torch.Tensor, wanted: int, searchable: torch.Tensor, scratch: Scratch) -> torch.Tensor:
        """Slots of the `wanted` searchable pages whose centroids best match a `(q, 128)` bfloat16
        query, best first: the coarse cut keeps SHORTLIST * wanted, then the full centroids decide."""
        if int(searchable.sum()) > SHORTLIST * wanted:
            first_cut = maxsim_centroid_major(query, self.coarse).masked_fill(~searchable, float("-inf"))
            shortlist = torch.topk(first_cut, SHORTLIST * wanted).indices.sort().values  # file order reads faster
        else:
            shortlist = searchable.nonzero().squeeze(1)
        fine = torch.empty(len(shortlist))
        for start in range(0, len(shortlist), FINE_PAGES):
            slots = shortlist[start : start + FINE_PAGES]
            block = scratch.take("centroids", (len(slots), POOLED_ROWS, DIM), torch.bfloat16)
            torch.index_select(self.rows, 0, slots, out=block)
            fine[start : start + len(slots)] = maxsim_rows(query, block)
        return shortlist[torch.topk(fine, wanted).indices]
