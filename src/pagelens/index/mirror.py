"""A memory-mapped mirror of an embedded store's page vectors, scored by pagelens itself.

Qdrant Edge keeps every page (the source of truth), but its multi-vector MaxSim runs a few GFLOP/s
on a CPU; torch's matmuls run 10-50x that. So each page's vectors are also appended to one file,

    <directory>/vectors.f16    float16 rows of 128: a page's token rows, then its POOLED_ROWS centroids

and the store records where (`Location`) in the page's payload. Search then works on the file:

- exact: every page's MaxSim, in float32 from the stored float16 values, a chunk of pages at a time;
- fast: MaxSim against the centroids (bfloat16, held in RAM as one `(pages, POOLED_ROWS, 128)`
  tensor) picks `prefetch` candidates, which are rescored exactly.

Rows are written and fsynced before the store's point that points at them, so a crash leaves at
worst unreferenced rows at the end of the file. Rows of deleted or replaced pages stay in the file
(no compaction yet).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pagelens.index.pages import DIM, POOLED_ROWS

CHUNK_ROWS = 1 << 16  # exact search converts this many float16 rows to float32 at a time


@dataclass(frozen=True)
class Location:
    """Where a page's rows sit in the file: `rows` token rows from `offset`, then POOLED_ROWS centroid rows."""

    offset: int
    rows: int

    @property
    def end(self) -> int:
        return self.offset + self.rows + POOLED_ROWS

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


class VectorMirror:
    """The vector file of one collection and the table of the pages it serves (point id -> Location).

    Not thread-safe: the owning store serializes calls.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "vectors.f16"
        self.path.touch(exist_ok=True)
        self._table: dict[int, Location] = {}
        self._map: np.ndarray | None = None
        self._pooled: tuple[np.ndarray, torch.Tensor] | None = None  # (point ids, (pages, POOLED_ROWS, 128) bf16)

    # ---------------------------------------------------------------- file
    @property
    def file_rows(self) -> int:
        return self.path.stat().st_size // (2 * DIM)

    def append(self, page: np.ndarray, pooled: np.ndarray) -> Location:
        """Write a page's `(n, 128)` rows and its `(POOLED_ROWS, 128)` centroids (both float16) and
        fsync; return where they are. The page is not searchable until `publish`."""
        if pooled.shape != (POOLED_ROWS, DIM) or page.ndim != 2 or page.shape[1] != DIM:
            raise ValueError(f"expected (n, {DIM}) and ({POOLED_ROWS}, {DIM}) rows, got {page.shape}, {pooled.shape}")
        with self.path.open("r+b") as file:
            offset = file.seek(0, os.SEEK_END) // (2 * DIM)
            file.write(np.ascontiguousarray(page, dtype=np.float16).tobytes())
            file.write(np.ascontiguousarray(pooled, dtype=np.float16).tobytes())
            file.flush()
            os.fsync(file.fileno())
        return Location(offset, len(page))

    def _rows(self) -> np.ndarray:
        """The file as `(rows, 128)` float16, mapped again when it has grown."""
        rows = self.file_rows
        if self._map is None or len(self._map) < rows:
            self._map = np.memmap(self.path, dtype=np.float16, mode="r", shape=(rows, DIM)) if rows else None
        return self._map if self._map is not None else np.zeros((0, DIM), np.float16)

    def holds(self, location: Location) -> bool:
        """Whether the file is long enough to hold `location` (false after the file was lost or cut)."""
        return location.end <= self.file_rows

    # ---------------------------------------------------------------- table
    def publish(self, point: int, location: Location) -> None:
        self._table[point] = location
        self._pooled = None

    def drop(self, point: int) -> None:
        if self._table.pop(point, None) is not None:
            self._pooled = None

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, point: int) -> bool:
        return point in self._table

    # ---------------------------------------------------------------- search
    def _pooled_matrix(self) -> tuple[np.ndarray, torch.Tensor]:
        if self._pooled is None:
            rows = self._rows()
            points = np.fromiter(self._table, dtype=np.int64, count=len(self._table))
            centroids = np.empty((len(points), POOLED_ROWS, DIM), dtype=np.float16)
            for i, point in enumerate(points.tolist()):
                start = self._table[point].offset + self._table[point].rows
                centroids[i] = rows[start : start + POOLED_ROWS]
            self._pooled = (points, torch.from_numpy(centroids).to(torch.bfloat16))
        return self._pooled

    def exact_scores(self, query: np.ndarray, points: list[int]) -> np.ndarray:
        """MaxSim of a `(q, 128)` float32 query against each of `points`, in float32: `(len(points),)`."""
        rows = self._rows()
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
        order = sorted(range(len(points)), key=lambda i: self._table[points[i]].offset)
        scores = np.empty(len(points), dtype=np.float32)
        chunk: list[int] = []
        chunk_rows = 0

        def score_chunk() -> None:
            locations = [self._table[points[i]] for i in chunk]
            block = np.concatenate([rows[loc.offset : loc.offset + loc.rows] for loc in locations])
            starts = np.cumsum([0] + [loc.rows for loc in locations[:-1]])
            scores[chunk] = segment_max_sum(q @ torch.from_numpy(block).float().T, starts)

        for i in order:
            chunk.append(i)
            chunk_rows += self._table[points[i]].rows
            if chunk_rows >= CHUNK_ROWS:
                score_chunk()
                chunk, chunk_rows = [], 0
        if chunk:
            score_chunk()
        return scores

    def search(
        self, query: np.ndarray, k: int, *, fast: bool, prefetch: int, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k `(point id, MaxSim)` of the published pages (those in `allowed`, if given), best first.
        `fast` rescores only the `prefetch` pages whose centroids score best."""
        if fast:
            points, centroids = self._pooled_matrix()
            if not len(points):
                return []
            q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(torch.bfloat16)
            approximate = (centroids.view(-1, DIM) @ q.T).view(len(points), POOLED_ROWS, -1).amax(1).float().sum(1)
            if allowed is not None:
                mask = torch.from_numpy(np.isin(points, np.fromiter(allowed, np.int64, len(allowed))))
                approximate = approximate.masked_fill(~mask, float("-inf"))
                available = int(mask.sum())
            else:
                available = len(points)
            best = torch.topk(approximate, min(max(prefetch, k), available)).indices.numpy()
            candidates = points[best].tolist()
        else:
            candidates = [p for p in self._table if allowed is None or p in allowed]
        if not candidates:
            return []
        scores = self.exact_scores(query, candidates)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in top]
