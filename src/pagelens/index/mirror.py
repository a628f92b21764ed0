"""The vector files of an embedded multi-vector store: each page's vectors, scored by pagelens itself.

A MaxSim is a matmul, and torch runs those at the CPU's bfloat16 speed, so the store keeps each
page's vectors in files it scores directly (a page's token rows, then its POOLED_ROWS centroids)
and records where in the page's payload (`Location`). (The name is historical: the files began
as a mirror of vectors Qdrant Edge also held; a store created since 2026-12 keeps them here only.)

    <directory>/vectors.f16      float16 rows of 128: generation 0
    <directory>/vectors.<g>.f16  generation g, written by a compaction

Search works on the file and on the centroids, which are held in RAM (index/centroids.py):

- exact: every page's MaxSim in float32 from the float16 rows, CHUNK_ROWS rows at a time;
- fast: the centroids' two cuts keep `prefetch` pages, which are scored exactly, so every
  returned score is an exact MaxSim.

Per-query tensors live in reused buffers (index/scratch.py).

Rows are written and fsynced before the store's point that points at them, so a crash leaves at
worst unreferenced rows at the end of the file. Rows of deleted or replaced pages stay until a
compaction (run by the store when it opens: `compact`) copies the live pages into the next
generation's file; the store records their new locations, and only then is the old file deleted.
A crash half-way leaves some pages in each file, every one readable; a file no page uses is
deleted at the next open (`drop_unused_files`).
"""

from __future__ import annotations

import mmap
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pagelens.index.centroids import CentroidMatrix
from pagelens.index.pages import DIM, LEGACY_POOLED_ROWS, POOLED_ROWS
from pagelens.index.scratch import SCRATCH

CHUNK_ROWS = 1 << 13  # exact search converts this many float16 rows to float32 at a time (fits in L2)
STALE_FILES = ("vectors.bf16",)  # a bfloat16 copy earlier versions kept beside the float16 file
GENERATION_FILE = re.compile(r"^vectors(?:\.(\d+))?\.f16$")
COMPACT_MIN_DEAD_ROWS = 1 << 16  # compact once dead rows are this many (16 MiB) and at least the live ones


def generation_file(generation: int) -> str:
    return "vectors.f16" if generation == 0 else f"vectors.{generation}.f16"


def merge_adjacent(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """`(generation, start, stop)` spans with each run of back-to-back spans of one file joined."""
    runs: list[tuple[int, int, int]] = []
    for generation, start, stop in spans:
        if runs and runs[-1][0] == generation and runs[-1][2] == start:
            runs[-1] = (generation, runs[-1][1], stop)
        else:
            runs.append((generation, start, stop))
    return runs


def segment_max_sum(scores: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """Sum over query columns of the max over each row segment: `(n, q)` scores, segments starting
    at `starts` (ascending, the first 0) -> `(len(starts),)` float32."""
    return np.maximum.reduceat(scores.numpy(), starts, axis=0).sum(axis=1)


@dataclass(frozen=True)
class Location:
    """Where a page's rows sit: in generation `generation`'s file, `rows` token rows from `offset`,
    then `pooled` centroid rows."""

    offset: int
    rows: int
    generation: int = 0
    pooled: int = POOLED_ROWS

    @property
    def end(self) -> int:
        return self.offset + self.rows + self.pooled

    @property
    def centroid_span(self) -> tuple[int, int, int]:
        return self.generation, self.offset + self.rows, self.end

    @property
    def token_span(self) -> tuple[int, int, int]:
        return self.generation, self.offset, self.offset + self.rows

    def to_payload(self) -> list[int]:
        return [self.offset, self.rows, self.generation, self.pooled]

    @classmethod
    def from_payload(cls, value: object) -> Location | None:
        """From `[offset, rows, generation, pooled]`, or the `[offset, rows]` of pages stored before
        compaction and per-page centroid counts existed (generation 0, LEGACY_POOLED_ROWS)."""
        if not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            return None
        if len(value) == 2:
            return cls(value[0], value[1], 0, LEGACY_POOLED_ROWS)
        if len(value) == 4 and 1 <= value[3] <= POOLED_ROWS:
            return cls(*value)
        return None


class RowFile:
    """An append-only file of 128-wide float16 rows, read back through a memory map.

    The map is read-only (so a mirror larger than RAM is never charged as memory, as a private
    writable map would be) and is remade when appends grew the file past it; reading pages already
    mapped costs no system call and no copy into a staging buffer, so a chunk of rows goes from the
    page cache straight into its float32 copy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch(exist_ok=True)
        self._mapped = torch.zeros((0, DIM), dtype=torch.float16)

    @property
    def rows(self) -> int:
        return self.path.stat().st_size // (2 * DIM)

    def append(self, *blocks: np.ndarray | torch.Tensor) -> None:
        """Append `(n, 128)` rows (converted to float16), after cutting the file to whole rows, and fsync."""
        with self.path.open("r+b") as file:
            file.truncate(self.rows * 2 * DIM)
            file.seek(0, os.SEEK_END)
            for block in blocks:
                values = block.to(torch.float16).numpy() if isinstance(block, torch.Tensor) else block
                file.write(np.ascontiguousarray(values, dtype=np.float16))
            file.flush()
            os.fsync(file.fileno())

    def view(self, start: int, stop: int) -> torch.Tensor:
        """Rows `[start, stop)`: a `(stop - start, 128)` float16 view of the file's memory map."""
        if stop > len(self._mapped):
            rows = self.rows
            with self.path.open("rb") as file:
                mapped = mmap.mmap(file.fileno(), rows * 2 * DIM, access=mmap.ACCESS_READ)
            with warnings.catch_warnings():  # torch has no read-only tensors; these views are only read
                warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)
                self._mapped = torch.frombuffer(mapped, dtype=torch.float16).view(rows, DIM)
        return self._mapped[start:stop]

    def close(self) -> None:
        self._mapped = torch.zeros((0, DIM), dtype=torch.float16)  # the map goes with its last view


class VectorMirror:
    """The vector files of one collection and the table of the pages they serve (point id -> Location).

    Not thread-safe: the owning store serializes calls.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in STALE_FILES:
            (self.directory / stale).unlink(missing_ok=True)
        found = [GENERATION_FILE.match(path.name) for path in self.directory.iterdir()]
        generations = sorted(int(match.group(1) or 0) for match in found if match)
        self.generation = generations[-1] if generations else 0  # appends go to the newest file
        self._files = {g: RowFile(self.directory / generation_file(g)) for g in {*generations, self.generation}}
        self._table: dict[int, Location] = {}
        self._centroids = CentroidMatrix()

    def close(self) -> None:
        for row_file in self._files.values():
            row_file.close()

    # ---------------------------------------------------------------- files
    @property
    def file_rows(self) -> int:
        """Rows the files hold, live or dead."""
        return sum(row_file.rows for row_file in self._files.values())

    @property
    def dead_rows(self) -> int:
        """Rows no published page uses (deleted or replaced pages, an interrupted ingest's)."""
        return self.file_rows - sum(location.end - location.offset for location in self._table.values())

    def append(self, page: np.ndarray, pooled: np.ndarray) -> Location:
        """Write a page's `(n, 128)` rows and its `(p, 128)` centroids (p <= POOLED_ROWS) to the
        newest file and fsync; return where they are. The page is not searchable until `publish`."""
        if page.ndim != 2 or pooled.ndim != 2 or page.shape[1] != DIM or pooled.shape[1] != DIM:
            raise ValueError(f"expected (n, {DIM}) rows and (p, {DIM}) centroids, got {page.shape}, {pooled.shape}")
        if not 1 <= len(pooled) <= POOLED_ROWS:
            raise ValueError(f"a page has 1 to {POOLED_ROWS} centroids, got {len(pooled)}")
        row_file = self._files[self.generation]
        offset = row_file.rows
        row_file.append(page, pooled)
        return Location(offset, len(page), self.generation, len(pooled))

    def holds(self, location: Location) -> bool:
        """Whether `location`'s file exists and is long enough (false after it was lost or cut)."""
        row_file = self._files.get(location.generation)
        return row_file is not None and location.end <= row_file.rows

    def gather(self, spans: list[tuple[int, int, int]], out: torch.Tensor) -> torch.Tensor:
        """Rows of `(generation, start, stop)` spans, concatenated into the front of `out` (any
        float dtype, enough rows; one copy per run of adjacent spans)."""
        position = 0
        for generation, start, stop in merge_adjacent(spans):
            out[position : position + stop - start].copy_(self._files[generation].view(start, stop))
            position += stop - start
        return out[:position]

    def should_compact(self) -> bool:
        """Whether dead rows are at least COMPACT_MIN_DEAD_ROWS (and one), and at least as many as live ones."""
        dead = self.dead_rows
        return dead >= max(COMPACT_MIN_DEAD_ROWS, 1, self.file_rows - dead)

    def compact(self, record: Callable[[dict[int, Location]], None]) -> int:
        """Copy every published page's rows into a new generation's file (fsynced), let `record`
        store their new locations durably, then delete the older files. Returns the rows freed.
        Call only with no ingest in flight (its appended rows are not published yet)."""
        freed = self.dead_rows
        generation = self.generation + 1
        target = RowFile(self.directory / generation_file(generation))
        moved: dict[int, Location] = {}
        pages = sorted(self._table.items(), key=lambda item: (item[1].generation, item[1].offset))
        for first in range(0, len(pages), 256):
            batch = pages[first : first + 256]
            spans = [(loc.generation, loc.offset, loc.end) for _, loc in batch]
            block = self.gather(
                spans, torch.empty((sum(stop - start for _, start, stop in spans), DIM), dtype=torch.float16)
            )
            offset = target.rows
            target.append(block)
            for point, location in batch:
                moved[point] = Location(offset, location.rows, generation, location.pooled)
                offset += location.end - location.offset
        record(moved)
        self._table.update(moved)
        self._files[generation], self.generation = target, generation
        self.drop_unused_files()  # every page is in the new file now
        return freed

    def drop_unused_files(self, keep: set[int] = frozenset()) -> list[str]:
        """Delete the files no published page uses, but the newest and the generations in `keep`
        (files an ingest to resume wrote to; a compaction that stopped half-way leaves one); return
        their names."""
        used = {location.generation for location in self._table.values()} | {self.generation} | set(keep)
        dropped = []
        for generation in [g for g in self._files if g not in used]:
            self._files.pop(generation).close()
            (self.directory / generation_file(generation)).unlink(missing_ok=True)
            dropped.append(generation_file(generation))
        return dropped

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

    def page_rows(self, point: int) -> np.ndarray:
        """A published page's token rows, copied out of the file: `(n_tokens, 128)` float16."""
        location = self._table[point]
        out = torch.empty((location.rows, DIM), dtype=torch.float16)
        return self.gather([location.token_span], out).numpy()

    def points_in_file_order(self, allowed: set[int] | None = None) -> list[int]:
        """The published points (those in `allowed`, if given), in the order their rows sit in the files."""
        points = [p for p in self._table if allowed is None or p in allowed]
        return sorted(points, key=lambda p: (self._table[p].generation, self._table[p].offset))

    # ---------------------------------------------------------------- search
    @property
    def centroid_bytes(self) -> int:
        """RAM the fast mode's centroids take (after `warm`)."""
        return self._centroids.nbytes

    def warm(self) -> None:
        """Load staged pages' centroids into RAM now rather than at the next fast search."""

        def read(points: list[int]) -> list[torch.Tensor]:
            counts = [self._table[p].pooled for p in points]
            out = torch.empty((sum(counts), DIM), dtype=torch.float16)
            return list(self.gather([self._table[p].centroid_span for p in points], out).split(counts))

        self._centroids.load(read)

    def exact_scores(self, query: np.ndarray, points: list[int]) -> np.ndarray:
        """MaxSim of a `(q, 128)` float32 query against each of `points`, in float32: `(len(points),)`.
        Pages are read in file order, about CHUNK_ROWS rows at a time."""
        query_t = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).T
        locations = [self._table[point] for point in points]
        order = sorted(range(len(points)), key=lambda i: (locations[i].generation, locations[i].offset))
        scores = np.empty(len(points), dtype=np.float32)
        with SCRATCH.lease() as scratch:
            chunk: list[int] = []
            chunk_rows = 0
            for position, i in enumerate(order):
                chunk.append(i)
                chunk_rows += locations[i].rows
                if chunk_rows < CHUNK_ROWS and position + 1 < len(order):
                    continue
                rows = self.gather(
                    [locations[j].token_span for j in chunk], scratch.take("float32", (chunk_rows, DIM), torch.float32)
                )
                similarities = torch.matmul(
                    rows, query_t, out=scratch.take("scores", (chunk_rows, len(query)), torch.float32)
                )
                scores[chunk] = segment_max_sum(similarities, np.cumsum([0] + [locations[j].rows for j in chunk[:-1]]))
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
