"""An embedded page store on Qdrant Edge (the Qdrant engine in-process, on disk): one shard per
collection, one point per page.

Each point holds the page's full multi-vector (`page`, float16, exact MaxSim, no HNSW) and a
row-pooled copy (`pooled`, every POOL_ROWS consecutive rows averaged) for the fast mode's
prefetch, plus its payload: `document_id`, `page` (1-based), `name`, `metadata`, `status`.

Whole-document atomicity: a document's pages are written with `status: "ingesting"` and flipped
to "complete" in one update after the last page, then flushed; search only sees complete ones, and
opening a store deletes incomplete ones (an ingest killed half-way). Qdrant Edge's write-ahead log
replays acknowledged updates after a crash, so a completed document is never lost. (The status is
a keyword, not a boolean: qdrant-edge-py 0.9.0's MatchValue(True) matches no boolean payload.)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pagelens.errors import InvalidInput

PAGE_VECTOR, POOLED_VECTOR = "page", "pooled"
POOL_ROWS = 8
INGESTING, COMPLETE = "ingesting", "complete"
SearchMode = Literal["exact", "fast"]


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    page: int
    score: float
    name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def point_id(document_id: str, page: int) -> int:
    """A stable 63-bit id for (document, page): re-adding a document overwrites, never duplicates."""
    digest = hashlib.sha256(f"{document_id}\0{page}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def pool_rows(vectors: np.ndarray, rows: int = POOL_ROWS) -> np.ndarray:
    """Average every `rows` consecutive vectors of `(n, d)` and L2-normalize: `(ceil(n / rows), d)` float32."""
    count, dim = vectors.shape
    padded = np.zeros((-(-count // rows) * rows, dim), dtype=np.float32)
    padded[:count] = vectors
    sums = padded.reshape(-1, rows, dim).sum(axis=1)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def _multivector_params(qdrant_edge):
    return qdrant_edge.EdgeVectorParams(
        size=128,
        distance=qdrant_edge.Distance.Dot,
        multivector_config=qdrant_edge.MultiVectorConfig(qdrant_edge.MultiVectorComparator.MaxSim),
        datatype=qdrant_edge.VectorStorageDatatype.Float16,
        hnsw_config=qdrant_edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),  # exact only
    )


class EdgePageStore:
    """One collection's pages in a Qdrant Edge shard directory. Thread-safe (one lock)."""

    def __init__(self, directory: str | Path) -> None:
        import qdrant_edge

        self._q = qdrant_edge
        self.directory = Path(directory)
        self._lock = threading.Lock()
        if (self.directory / "edge_config.json").exists():
            self._shard = qdrant_edge.EdgeShard.load(str(self.directory))
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            config = qdrant_edge.EdgeConfig(
                vectors={PAGE_VECTOR: _multivector_params(qdrant_edge), POOLED_VECTOR: _multivector_params(qdrant_edge)}
            )
            self._shard = qdrant_edge.EdgeShard.create(str(self.directory), config)
            for name in ("document_id", "status"):
                self._shard.update(
                    qdrant_edge.UpdateOperation.create_field_index(name, qdrant_edge.PayloadSchemaType.Keyword)
                )
        self.purged_on_open = self.purge_incomplete()

    # ---------------------------------------------------------------- filters
    def _match(self, key: str, value: Any):
        q = self._q
        return q.FieldCondition(key, match=q.MatchValue(value))

    def _complete_filter(self, extra: dict[str, Any] | None = None):
        conditions = [self._match("status", COMPLETE)]
        for key, value in (extra or {}).items():
            if not isinstance(value, str | int | bool):
                raise InvalidInput(f"filter value for {key!r} must be a string, integer or boolean")
            conditions.append(self._match(f"metadata.{key}", value))
        return self._q.Filter(must=conditions)

    # ---------------------------------------------------------------- writes
    def add_document(
        self,
        document_id: str,
        pages: Iterable[np.ndarray],
        *,
        name: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Store a document's pages (`(n_tokens, 128)` arrays, in page order) atomically; return the page count.

        `pages` may be a generator: pages are written as they come, then the document is marked
        complete in one update and flushed.
        """
        q = self._q
        count = 0
        for number, vectors in enumerate(pages, start=1):
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != 128 or not len(vectors):
                raise InvalidInput(f"page {number} has shape {vectors.shape}; expected (n_tokens, 128)")
            payload = {"document_id": document_id, "page": number, "name": name, "metadata": metadata or {},
                       "status": INGESTING}  # fmt: skip
            point = q.Point(
                point_id(document_id, number),
                {PAGE_VECTOR: vectors.astype(np.float16), POOLED_VECTOR: pool_rows(vectors).astype(np.float16)},
                payload,
            )
            with self._lock:
                self._shard.update(q.UpdateOperation.upsert_points([point]))
            count = number
        with self._lock:
            document = q.Filter(must=[self._match("document_id", document_id)])
            stale = q.Filter(
                must=[self._match("document_id", document_id), q.FieldCondition("page", range=q.RangeFloat(gt=count))]
            )
            self._shard.update(q.UpdateOperation.delete_points_by_filter(stale))  # pages of an older, longer version
            self._shard.update(q.UpdateOperation.set_payload_by_filter(document, {"status": COMPLETE}))
            self._shard.flush()
        return count

    def delete_document(self, document_id: str) -> int:
        """Remove a document's pages; return how many there were."""
        q = self._q
        document = q.Filter(must=[self._match("document_id", document_id)])
        with self._lock:
            pages = self._shard.count(q.CountRequest(filter=document))
            self._shard.update(q.UpdateOperation.delete_points_by_filter(document))
            self._shard.flush()
        return pages

    def purge_incomplete(self) -> int:
        """Delete the pages of documents whose ingest never completed; return how many."""
        q = self._q
        incomplete = q.Filter(must=[self._match("status", INGESTING)])
        with self._lock:
            pages = self._shard.count(q.CountRequest(filter=incomplete))
            if pages:
                self._shard.update(q.UpdateOperation.delete_points_by_filter(incomplete))
                self._shard.flush()
        return pages

    # ---------------------------------------------------------------- reads
    def page_count(self, document_id: str | None = None) -> int:
        """Pages of complete documents (of one document if given)."""
        q = self._q
        conditions = [self._match("status", COMPLETE)]
        if document_id is not None:
            conditions.append(self._match("document_id", document_id))
        with self._lock:
            return self._shard.count(q.CountRequest(filter=q.Filter(must=conditions)))

    def search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = 200,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages by MaxSim against a `(q, 128)` query. `exact` scores every page; `fast`
        prefetches `prefetch` candidates on the pooled vectors and reranks them exactly."""
        q = self._q
        query = np.asarray(query, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != 128:
            raise InvalidInput(f"query embedding has shape {query.shape}; expected (n_tokens, 128)")
        if not 1 <= k <= 1000:
            raise InvalidInput(f"k must be between 1 and 1000, got {k}")
        if mode not in ("exact", "fast"):
            raise InvalidInput(f"mode must be 'exact' or 'fast', got {mode!r}")
        condition = self._complete_filter(filter)
        nearest = q.Query.Nearest(query, using=PAGE_VECTOR)
        if mode == "exact":
            request = q.QueryRequest(limit=k, query=nearest, filter=condition, with_payload=True,
                                     params=q.SearchParams(exact=True))  # fmt: skip
        else:
            candidates = q.Prefetch(limit=max(prefetch, k), query=q.Query.Nearest(query, using=POOLED_VECTOR),
                                    filter=condition, params=q.SearchParams(exact=True))  # fmt: skip
            request = q.QueryRequest(limit=k, prefetches=[candidates], query=nearest, with_payload=True)
        with self._lock:
            points = self._shard.query(request)
        return [
            SearchHit(
                p.payload["document_id"],
                int(p.payload["page"]),
                float(p.score),
                p.payload.get("name", ""),
                p.payload.get("metadata") or {},
            )
            for p in points
        ]

    def close(self) -> None:
        with self._lock:
            self._shard.close()
