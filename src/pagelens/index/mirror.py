"""A file mirror of an embedded store's page vectors, scored by pagelens itself.

Qdrant Edge keeps every page (the source of truth) and scores multi-vectors itself, but a MaxSim
is a matmul, and torch runs those at the CPU's bfloat16 speed. So each page's vectors are also
appended to two files with the same row layout (a page's token rows, then its POOLED_ROWS
centroids), and the store records where (`Location`) in the page's payload:

    <directory>/vectors.f16    float16 rows of 128 (the values Qdrant stores)
    <directory>/vectors.bf16   the same rows rounded to bfloat16

Search works on the files:

- exact: every page's MaxSim in float32 from the float16 rows, a chunk of pages at a time;
- fast: narrows in stages, each a MaxSim against a finer copy of the pages: COARSE_ROWS centroids
  of each page's centroids (computed in RAM) keep SHORTLIST * `prefetch` pages; the page's
  POOLED_ROWS centroids (held in RAM as one `(pages, POOLED_ROWS, 128)` bfloat16 tensor) keep
  `prefetch`; their bfloat16 token rows keep max(RESCORED * k, 40); those are scored exactly, so
  every returned score is exact. (At 10k pages, one matmul over every page's 64 centroids alone
  took ~35 ms of the 50 ms budget on 2 cores: docs/benchmarks.md, "search".)

Rows are written and fsynced before the store's point that points at them, so a crash leaves at
worst unreferenced rows at the end of the files. Rows of deleted or replaced pages stay in the file
(no compaction yet).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pagelens.index.pages import DIM, POOLED_ROWS

CHUNK_ROWS = 1 << 16  # exact search converts this many float16 rows to float32 at a time
RESCORED = 4  # fast mode scores RESCORED * k (at least 40) of its bfloat16-ranked candidates exactly
COARSE_ROWS = 24  # centroids of a page's centroids, for the fast mode's first cut
SHORTLIST = 20  # the first cut keeps SHORTLIST * prefetch pages


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


def segment_max_sum(scores: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """Sum over query rows of the max over each column segment: `(q, n)` scores, segments starting
    at `starts` (ascending, the first 0) -> `(len(starts),)` float32."""
    return np.maximum.reduceat(scores.numpy(), starts, axis=1).sum(axis=0)


class RowFile:
    """An append-only file of 128-wide rows of one 2-byte dtype, read back span by span."""

    def __init__(self, path: Path, dtype: torch.dtype) -> None:
        self.path, self.dtype = path, dtype
        path.touch(exist_ok=True)
        self._reader = os.open(path, os.O_RDONLY)

    @property
    def rows(self) -> int:
        return self.path.stat().st_size // (2 * DIM)

    def write(self, file, rows: np.ndarray) -> None:
        """Write `(n, 128)` float32 rows, converted to this file's dtype, into an open `file`."""
        converted = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.dtype)
        file.write(converted.view(torch.int16).numpy().tobytes())

    def gather(self, spans: list[tuple[int, int]]) -> torch.Tensor:
        """Rows `[start, stop)` of each span, concatenated: `(sum of lengths, 128)` in this file's dtype.
        (One pread per span: copying from the page cache beats faulting in a memory map's pages.)"""
        block = np.empty((sum(stop - start for start, stop in spans), DIM), dtype=np.int16)
        position = 0
        for start, stop in spans:
            os.preadv(self._reader, [memoryview(block[position : position + stop - start])], start * 2 * DIM)
            position += stop - start
        return torch.from_numpy(block).view(self.dtype)

    def close(self) -> None:
        os.close(self._reader)


class CentroidMatrix:
    """Every searchable page's centroids in RAM as one `(slots, POOLED_ROWS, 128)` bfloat16 tensor
    (and their `coarse_pool`, `(slots, COARSE_ROWS, 128)`), kept up to date without rebuilding: new
    pages are staged and appended at the next `load`, removed ones are masked out (`alive`), and the
    dead slots are squeezed out once they are a quarter."""

    def __init__(self) -> None:
        self.points = np.zeros(0, dtype=np.int64)  # the point id in each slot
        self.rows = torch.zeros((0, POOLED_ROWS, DIM), dtype=torch.bfloat16)
        self.coarse = torch.zeros((0, COARSE_ROWS, DIM), dtype=torch.bfloat16)
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
            added = read(points).view(len(points), POOLED_ROWS, DIM)
            self.rows = torch.cat([self.rows, added])
            self.coarse = torch.cat([self.coarse, *(coarse_pool(part) for part in added.split(1024))])
            self.points = np.concatenate([self.points, np.asarray(points, dtype=np.int64)])
            self.alive = torch.cat([self.alive, torch.ones(len(points), dtype=torch.bool)])
            self._slot.update((point, first + i) for i, point in enumerate(points))
        dead = len(self.points) - len(self._slot)
        if dead and dead * 4 >= len(self.points):
            keep = self.alive.nonzero().squeeze(1)
            self.rows, self.coarse, self.alive = self.rows[keep], self.coarse[keep], self.alive[keep]
            self.points = self.points[keep.numpy()]
            self._slot = {int(point): slot for slot, point in enumerate(self.points)}


class VectorMirror:
    """The vector files of one collection and the table of the pages they serve (point id -> Location).

    Not thread-safe: the owning store serializes calls.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.exact_rows = RowFile(self.directory / "vectors.f16", torch.float16)
        self.fast_rows = RowFile(self.directory / "vectors.bf16", torch.bfloat16)
        self._table: dict[int, Location] = {}
        self._centroids = CentroidMatrix()

    def close(self) -> None:
        self.exact_rows.close()
        self.fast_rows.close()

    # ---------------------------------------------------------------- files
    @property
    def file_rows(self) -> int:
        """Rows both files hold."""
        return min(self.exact_rows.rows, self.fast_rows.rows)

    def append(self, page: np.ndarray, pooled: np.ndarray) -> Location:
        """Write a page's `(n, 128)` rows and its `(POOLED_ROWS, 128)` centroids to both files and
        fsync; return where they are. The page is not searchable until `publish`."""
        if pooled.shape != (POOLED_ROWS, DIM) or page.ndim != 2 or page.shape[1] != DIM:
            raise ValueError(f"expected (n, {DIM}) and ({POOLED_ROWS}, {DIM}) rows, got {page.shape}, {pooled.shape}")
        offset = max(self.exact_rows.rows, self.fast_rows.rows)  # a file cut short is padded back into step
        for row_file in (self.exact_rows, self.fast_rows):
            with row_file.path.open("r+b") as file:
                file.truncate(offset * 2 * DIM)
                file.seek(0, os.SEEK_END)
                row_file.write(file, page)
                row_file.write(file, pooled)
                file.flush()
                os.fsync(file.fileno())
        return Location(offset, len(page))

    def holds(self, location: Location) -> bool:
        """Whether both files are long enough to hold `location` (false after one was lost or cut)."""
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
        self._centroids.load(lambda points: self.fast_rows.gather([self._table[p].centroid_span for p in points]))

    def _scores(self, row_file: RowFile, query: torch.Tensor, points: list[int]) -> np.ndarray:
        """MaxSim of `query` (in `row_file`'s compute dtype) against each of `points`: `(len(points),)` float32.
        Pages are read in file order, CHUNK_ROWS rows at a time."""
        order = sorted(range(len(points)), key=lambda i: self._table[points[i]].offset)
        scores = np.empty(len(points), dtype=np.float32)
        chunk: list[int] = []
        chunk_rows = 0
        for position, i in enumerate(order):
            chunk.append(i)
            chunk_rows += self._table[points[i]].rows
            if chunk_rows < CHUNK_ROWS and position + 1 < len(order):
                continue
            locations = [self._table[points[j]] for j in chunk]
            block = row_file.gather([(loc.offset, loc.offset + loc.rows) for loc in locations])
            if query.dtype == torch.float32:
                block = block.float()
            starts = np.cumsum([0] + [loc.rows for loc in locations[:-1]])
            scores[chunk] = segment_max_sum((query @ block.T).float(), starts)
            chunk, chunk_rows = [], 0
        return scores

    def exact_scores(self, query: np.ndarray, points: list[int]) -> np.ndarray:
        """MaxSim of a `(q, 128)` float32 query against each of `points`, in float32: `(len(points),)`."""
        return self._scores(self.exact_rows, torch.from_numpy(np.ascontiguousarray(query, np.float32)), points)

    def search(
        self, query: np.ndarray, k: int, *, fast: bool, prefetch: int, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k `(point id, MaxSim)` of the published pages (those in `allowed`, if given), best first.
        `fast` considers only the `prefetch` pages whose centroids score best."""
        if fast:
            self.warm()
            points, centroids, searchable = self._centroids.points, self._centroids.rows, self._centroids.alive
            if allowed is not None:
                searchable = searchable & torch.from_numpy(np.isin(points, np.fromiter(allowed, np.int64)))
            available = int(searchable.sum())
            if not available:
                return []
            q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(torch.bfloat16)
            wanted = min(max(prefetch, k), available)
            if available > SHORTLIST * wanted:
                first_cut = maxsim_rows(q, self._centroids.coarse).masked_fill(~searchable, float("-inf"))
                shortlist = torch.topk(first_cut, SHORTLIST * wanted).indices
            else:
                shortlist = searchable.nonzero().squeeze(1)
            fine = maxsim_rows(q, centroids.index_select(0, shortlist))
            best = shortlist[torch.topk(fine, wanted).indices].numpy()
            candidates = points[best].tolist()
            rescored = max(RESCORED * k, 40)
            if len(candidates) > rescored:
                ranked = np.argsort(-self._scores(self.fast_rows, q, candidates), kind="stable")
                candidates = [candidates[i] for i in ranked[:rescored]]
        else:
            candidates = [p for p in self._table if allowed is None or p in allowed]
        if not candidates:
            return []
        scores = self.exact_scores(query, candidates)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in top]
