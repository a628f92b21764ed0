"""The search bench's reference: brute-force float32 MaxSim streamed from a plain file of float16 rows.

The bench writes every page's rows, as the store stores them (float16), back to back in page order
into one file of its own (`RowsFile`), so the reference depends on nothing the store writes: a
store that kept wrong rows would disagree with it. Holding the corpus in RAM as float32 does not
scale (100k ColQwen-sized pages: ~36 GB), so the file is read as the store's exact search reads its
mirror: through a read-only memory map, whole pages about CHUNK_ROWS rows at a time, each chunk
copied into a reused float32 buffer, one matmul against the query, the max over each page's rows
and the sum over the query's tokens.

- `BruteForceScan.scores(query)`: one query over the whole file, the brute-force latency row;
- `ground_truth(...)`: every query's scores in one pass over the file (each chunk is read and
  converted once for all queries), with the same per-query arithmetic, so its scores equal
  `scores(query)`'s.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from pagelens.errors import InvalidInput

DIM = 128
CHUNK_ROWS = 1 << 13  # as the mirror's exact search: 8192 float32 rows (4 MiB) per matmul


class RowsWriter:
    """Writes `(n, 128)` pages as float16 rows, back to back, to `path`: into a temporary file that
    replaces `path` once the `with` block ends without error (fsynced), so a file at `path` is whole."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0

    def __enter__(self) -> RowsWriter:
        self._file = self._partial.open("wb")
        return self

    def write(self, pages: Iterable[np.ndarray]) -> None:
        for page in pages:
            self._file.write(np.ascontiguousarray(page, dtype=np.float16))
            self.rows += len(page)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        if kind is None:
            self._partial.replace(self.path)
        else:
            self._partial.unlink(missing_ok=True)


def write_rows_file(path: Path, pages: Iterable[np.ndarray]) -> int:
    """Write `pages` to a rows file at `path` (`RowsWriter`); return the rows written."""
    with RowsWriter(path) as writer:
        writer.write(pages)
    return writer.rows


def chunk_bounds(counts: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    """`[first page, stop page)` groups of whole pages: each ends with the page that takes its rows
    to `chunk_rows` or more (the last one with the last page)."""
    bounds, first, rows = [], 0, 0
    for page, count in enumerate(counts.tolist()):
        rows += count
        if rows >= chunk_rows or page + 1 == len(counts):
            bounds.append((first, page + 1))
            first, rows = page + 1, 0
    return bounds


class RowsFile:
    """A file of float16 rows of 128, page `i` being `counts[i]` rows after pages `0..i-1`'s.
    InvalidInput when the file's size does not match `counts`."""

    def __init__(self, path: Path, counts: np.ndarray) -> None:
        self.path, self.counts = Path(path), np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        expected = int(self.starts[-1]) * DIM * 2
        size = self.path.stat().st_size
        if size != expected:
            pages = len(self.counts)
            raise InvalidInput(f"{self.path} holds {size} bytes; {pages} pages of these sizes need {expected}")
        with self.path.open("rb") as file:
            mapped = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        with warnings.catch_warnings():  # torch has no read-only tensors; these views are only read
            warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)
            self.rows = torch.frombuffer(mapped, dtype=torch.float16).view(-1, DIM)
        self.chunks = chunk_bounds(self.counts)
        self.max_chunk_rows = max((int(self.starts[b] - self.starts[a]) for a, b in self.chunks), default=0)

    @property
    def pages(self) -> int:
        return len(self.counts)

    def float32_chunks(self) -> Iterator[tuple[int, int, torch.Tensor, np.ndarray]]:
        """`(first page, stop page, (rows, 128) float32 rows, each page's first row within them)`
        per chunk; the rows live in one reused buffer, valid until the next chunk."""
        buffer = torch.empty((self.max_chunk_rows, DIM), dtype=torch.float32)
        for first, stop in self.chunks:
            start, end = int(self.starts[first]), int(self.starts[stop])
            rows = buffer[: end - start]
            rows.copy_(self.rows[start:end])
            yield first, stop, rows, self.starts[first:stop] - start


def _page_scores(rows: torch.Tensor, query_t: torch.Tensor, out: torch.Tensor, page_starts: np.ndarray) -> np.ndarray:
    """MaxSim of one `(q, 128)` query (given transposed, `(128, q)`) against a chunk's pages:
    `(pages,)` float32 (max over each page's rows, then the sum over the query's tokens)."""
    similarities = torch.matmul(rows, query_t, out=out)
    return np.maximum.reduceat(similarities.numpy(), page_starts, axis=0).sum(axis=1)


class BruteForceScan:
    """One query's MaxSim against every page of a `RowsFile`, read chunk by chunk."""

    def __init__(self, rows_file: RowsFile) -> None:
        self.rows_file = rows_file

    def scores(self, query: np.ndarray) -> np.ndarray:
        """`(pages,)` float32 MaxSim scores of a `(q, 128)` float32 query."""
        query_t = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).T
        scores = np.empty(self.rows_file.pages, dtype=np.float32)
        out = torch.empty((self.rows_file.max_chunk_rows, len(query)), dtype=torch.float32)
        for first, stop, rows, page_starts in self.rows_file.float32_chunks():
            scores[first:stop] = _page_scores(rows, query_t, out[: len(rows)], page_starts)
        return scores


def ground_truth(rows_file: RowsFile, queries: list[np.ndarray]) -> np.ndarray:
    """Every query's scores in one pass over the file: `(queries, pages)` float32, row `j` equal to
    `BruteForceScan(rows_file).scores(queries[j])` (each query's own matmul on the same chunk, so the
    same arithmetic; only the reading and conversion are shared)."""
    transposed = [torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)).T for q in queries]
    scores = np.empty((len(queries), rows_file.pages), dtype=np.float32)
    outs = {width: torch.empty((rows_file.max_chunk_rows, width), dtype=torch.float32)
            for width in {len(q) for q in queries}}  # fmt: skip
    for first, stop, rows, page_starts in rows_file.float32_chunks():
        for number, query_t in enumerate(transposed):
            out = outs[query_t.shape[1]][: len(rows)]
            scores[number, first:stop] = _page_scores(rows, query_t, out, page_starts)
    return scores


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """The `k` best pages of `(pages,)` scores, best first, ties to the lower page index."""
    return np.argsort(-scores, kind="stable")[:k].tolist()
