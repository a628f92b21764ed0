"""An embedded page store on Qdrant Edge (the Qdrant engine in-process, on disk): one shard per
collection, one point per page.

Each point holds the page's full multi-vector (`page`, float16, exact MaxSim, no HNSW) and a
row-pooled copy (`pooled`, every POOL_ROWS consecutive rows averaged) for the fast mode's
prefetch, plus its payload: `document_id`, `page` (1-based), `name`, `metadata`, `status`. The
layout, input checks and hits are shared with the Qdrant server store (index/pages.py).

Whole-document atomicity: a document's pages are written with `status: "ingesting"` and flipped
to "complete" in one update after the last page, then flushed; search only sees complete ones, and
opening a store deletes incomplete ones (an ingest killed half-way). Qdrant Edge's write-ahead log
replays acknowledged updates after a crash, so a completed document is never lost. (The status is
a keyword, not a boolean: qdrant-edge-py 0.9.0's MatchValue(True) matches no boolean payload.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pagelens.index.pages import (
    COMPLETE,
    INGESTING,
    PAGE_VECTOR,
    POOL_ROWS,
    POOLED_VECTOR,
    SearchHit,
    SearchMode,
    check_query,
    page_payload,
    page_vectors,
    point_id,
    pool_rows,
    search_matches,
    to_hit,
)

__all__ = ["COMPLETE", "INGESTING", "POOL_ROWS", "EdgePageStore", "SearchHit", "SearchMode", "point_id", "pool_rows"]


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
        return self._q.Filter(must=[self._match(key, value) for key, value in search_matches(extra)])

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
            named = page_vectors(number, vectors)
            point = q.Point(point_id(document_id, number), named, page_payload(document_id, number, name, metadata))
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
        query = check_query(query, k, mode)
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
        return [to_hit(p.payload, p.score) for p in points]

    def close(self) -> None:
        with self._lock:
            self._shard.close()
