"""A file mirror of an embedded store's page vectors, scored by pagelens itself.

Qdrant Edge keeps every page (the source of truth) and scores multi-vectors itself, but a MaxSim
is a matmul, and torch runs those at the CPU's bfloat16 speed. So each page's vectors are also
appended to a file (a page's token rows, then its POOLED_ROWS centroids), and the store records
where (`Location`) in the page's payload:

    <directory>/vectors.f16    float16 rows of 128 (the values Qdrant stores)

Search works on the file and on the centroids, which are held in RAM:

- exact: every page's MaxSim in float32 from the float16 rows, CHUNK_ROWS rows at a time;
- fast: narrows in stages, each a MaxSim against a finer copy of the pages: COARSE_ROWS centroids
  of each page's centroids (bfloat16, centroid-major) keep SHORTLIST * `prefetch` pages; their
  POOLED_ROWS centroids (bfloat16) keep `prefetch`; those are scored exactly, so every returned
  score is an exact MaxSim. (At 10k pages, one matmul over every page's 64 centroids alone took
  ~35 ms of the 50 ms budget on 2 cores: docs/benchmarks.md, "search".)

The large per-query tensors (rows read from the file, their float32 copy, the shortlist's
centroids) live in reused buffers (`Scratch`): allocated anew, each costs a page fault per 4 KiB
(glibc maps blocks over 32 MiB afresh every time), which was a third of a fast search.

Rows are written and fsynced before the store's point that points at them, so a crash leaves at
worst unreferenced rows at the end of the file. Rows of deleted or replaced pages stay in the file
(no compaction yet).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pagelens.index.pages import DIM, POOLED_ROWS

CHUNK_ROWS = 1 << 16  # exact search converts this many float16 rows to float32 at a time
COARSE_ROWS = 32  # centroids of a page's centroids, for the fast mode's first cut (24: recall 0.950, 32: 0.963)
SHORTLIST = 20  # the first cut keeps SHORTLIST * prefetch pages
FINE_PAGES = 512  # the second cut scores the shortlist's centroids this many pages at a time
STALE_FILES = ("vectors.bf16",)  # a bfloat16 copy earlier versions kept beside the float16 file


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


def segment_max_sum(scores: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """Sum over query columns of the max over each row segment: `(n, q)` scores, segments starting
    at `starts` (ascending, the first 0) -> `(len(starts),)` float32."""
    return np.maximum.reduceat(scores.numpy(), starts, axis=0).sum(axis=1)


class Scratch:
    """Named buffers reused across searches; `take` hands out a view of the wanted shape."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self._buffers[name] = torch.empty(size, dtype=dtype)
        return buffer[:size].view(shape)


class ScratchPool:
    """Scratch sets lent to one search at a time, so memory held is bounded by concurrent searches,
    not by the number of collections."""

    def __init__(self) -> None:
        self._free: list[Scratch] = []
        self._lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[Scratch]:
        with self._lock:
            scratch = self._free.pop() if self._free else Scratch()
        try:
            yield scratch
        finally:
            with self._lock:
                self._free.append(scratch)


SCRATCH = ScratchPool()


@dataclass(frozen=True)
class Location:
    """Where a page's rows sit in the file: `rows` token rows from `offset`, then POOLED_ROWS centroid rows."""

    offset: int
    rows: int

    @property
    def end(self) -> int:
        return self.offset + self.rows + POOLED_ROWS

    @property
    def centroid_span(self) -> tuple[int, int]:
        return self.offset + self.rows, self.end

    def to_payload(self) -> list[int]:
        return [self.offset, self.rows]

    @classmethod
    def from_payload(cls, value: object) -> Location | None:
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return cls(int(value[0]), int(value[1]))
        return None


class RowFile:
    """An append-only file of 128-wide float16 rows, read back span by span."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch(exist_ok=True)
        self._reader = os.open(path, os.O_RDONLY)

    @property
    def rows(self) -> int:
        return self.path.stat().st_size // (2 * DIM)

    def append(self, *blocks: np.ndarray) -> None:
        """Append `(n, 128)` rows (converted to float16), after cutting the file to whole rows, and fsync."""
        with self.path.open("r+b") as file:
            file.truncate(self.rows * 2 * DIM)
            file.seek(0, os.SEEK_END)
            for block in blocks:
                file.write(np.ascontiguousarray(block, dtype=np.float16).tobytes())
            file.flush()
            os.fsync(file.fileno())

    def gather(self, spans: list[tuple[int, int]], out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows `[start, stop)` of each span, concatenated: `(sum of lengths, 128)` float16, in `out`
        (a float16 tensor with at least that many rows) if given. (One pread per span: copying from
        the page cache beats faulting in a memory map's pages.)"""
        total = sum(stop - start for start, stop in spans)
        block = torch.empty((total, DIM), dtype=torch.float16) if out is None else out[:total]
        raw = block.view(torch.int16).numpy()
        position = 0
        for start, stop in spans:
            os.preadv(self._reader, [memoryview(raw[position : position + stop - start])], start * 2 * DIM)
            position += stop - start
        return block

    def close(self) -> None:
        os.close(self._reader)


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

    def load(self, read: Callable[[list[int]], torch.Tensor]) -> None:
        """Append the staged pages, `read(points)` giving their `(len * POOLED_ROWS, 128)` rows."""
        if self._staged:
            points = list(self._staged)
            self._staged.clear()
            first = len(self.points)
            added = read(points).to(torch.bfloat16).view(len(points), POOLED_ROWS, DIM)
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


class VectorMirror:
    """The vector file of one collection and the table of the pages it serves (point id -> Location).

    Not thread-safe: the owning store serializes calls.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in STALE_FILES:
            (self.directory / stale).unlink(missing_ok=True)
        self.exact_rows = RowFile(self.directory / "vectors.f16")
        self._table: dict[int, Location] = {}
        self._centroids = CentroidMatrix()

    def close(self) -> None:
        self.exact_rows.close()

    # ---------------------------------------------------------------- file
    @property
    def file_rows(self) -> int:
        """Rows the file holds."""
        return self.exact_rows.rows

    def append(self, page: np.ndarray, pooled: np.ndarray) -> Location:
        """Write a page's `(n, 128)` rows and its `(POOLED_ROWS, 128)` centroids to the file and
        fsync; return where they are. The page is not searchable until `publish`."""
        if pooled.shape != (POOLED_ROWS, DIM) or page.ndim != 2 or page.shape[1] != DIM:
            raise ValueError(f"expected (n, {DIM}) and ({POOLED_ROWS}, {DIM}) rows, got {page.shape}, {pooled.shape}")
        offset = self.exact_rows.rows
        self.exact_rows.append(page, pooled)
        return Location(offset, len(page))

    def holds(self, location: Location) -> bool:
        """Whether the file is long enough to hold `location` (false after it was lost or cut)."""
        return location.end <= self.file_rows

    # ---------------------------------------------------------------- table
    def publish(self, point: int, location: Location) -> None:
        """Make a page searchable (replacing an earlier version of the same point)."""
        self._table[point] = location
        self._centroids.stage(point)

    def drop(self, point: int) -> None:
        if self._table.pop(point, None) is not None:
            self._centroids.remove(point)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, point: int) -> bool:
        return point in self._table

    # ---------------------------------------------------------------- search
    def warm(self) -> None:
        """Load staged pages' centroids into RAM now rather than at the next fast search."""
        self._centroids.load(lambda points: self.exact_rows.gather([self._table[p].centroid_span for p in points]))

    def exact_scores(self, query: np.ndarray, points: list[int]) -> np.ndarray:
        """MaxSim of a `(q, 128)` float32 query against each of `points`, in float32: `(len(points),)`.
        Pages are read in file order, about CHUNK_ROWS rows at a time."""
        query_t = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).T
        order = sorted(range(len(points)), key=lambda i: self._table[points[i]].offset)
        scores = np.empty(len(points), dtype=np.float32)
        with SCRATCH.lease() as scratch:
            chunk: list[int] = []
            chunk_rows = 0
            for position, i in enumerate(order):
                chunk.append(i)
                chunk_rows += self._table[points[i]].rows
                if chunk_rows < CHUNK_ROWS and position + 1 < len(order):
                    continue
                locations = [self._table[points[j]] for j in chunk]
                stored = self.exact_rows.gather(
                    [(loc.offset, loc.offset + loc.rows) for loc in locations],
                    scratch.take("float16", (chunk_rows, DIM), torch.float16),
                )
                rows = scratch.take("float32", (chunk_rows, DIM), torch.float32).copy_(stored)
                similarities = torch.matmul(
                    rows, query_t, out=scratch.take("scores", (chunk_rows, len(query)), torch.float32)
                )
                scores[chunk] = segment_max_sum(similarities, np.cumsum([0] + [loc.rows for loc in locations[:-1]]))
                chunk, chunk_rows = [], 0
        return scores

    def search(
        self, query: np.ndarray, k: int, *, fast: bool, prefetch: int, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k `(point id, MaxSim)` of the published pages (those in `allowed`, if given), best first.
        `fast` scores exactly only the `prefetch` (at least k) pages whose centroids score best."""
        if fast:
            self.warm()
            points, searchable = self._centroids.points, self._centroids.alive
            if allowed is not None:
                searchable = searchable & torch.from_numpy(np.isin(points, np.fromiter(allowed, np.int64)))
            available = int(searchable.sum())
            if not available:
                return []
            q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(torch.bfloat16)
            with SCRATCH.lease() as scratch:
                best = self._centroids.best(q, min(max(prefetch, k), available), searchable, scratch)
            candidates = points[best.numpy()].tolist()
        else:
            candidates = [p for p in self._table if allowed is None or p in allowed]
        if not candidates:
            return []
        scores = self.exact_scores(query, candidates)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in top]
