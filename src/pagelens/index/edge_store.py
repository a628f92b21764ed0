"""An embedded page store on Qdrant Edge (the Qdrant engine in-process, on disk): one shard per
collection, one point per page.

Each point holds the page's full multi-vector (`page`, float16, exact MaxSim, no HNSW) and its
cluster centroids (`pooled`) for the fast mode's prefetch, plus its payload: `document_id`, `page`
(1-based), `name`, `metadata`, `status`, and `mirror` (where the page's rows sit in the vector
mirror). The layout, input checks and hits are shared with the Qdrant server store (index/pages.py).

Search runs on the mirror (index/mirror.py: the vectors again in files beside the shard, scored
with torch matmuls; `pagelens bench search` times it against Qdrant Edge's own MaxSim); the shard
answers the filters and payloads. `qdrant_search` runs the same search in Qdrant Edge, to cross-check. Opening
a store rebuilds the mirror's table from the payloads and re-copies, from the shard, any page the
mirror file does not hold (a lost file, or a store written before the mirror existed).

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

from pagelens.errors import Conflict
from pagelens.index.mirror import Location, VectorMirror
from pagelens.index.pages import (
    COMPLETE,
    INGESTING,
    PAGE_VECTOR,
    POOLED_VECTOR,
    SearchHit,
    SearchMode,
    check_query,
    cluster_pool,
    page_payload,
    page_vectors,
    point_id,
    search_matches,
    to_hit,
)

__all__ = ["COMPLETE", "INGESTING", "EdgePageStore", "SearchHit", "SearchMode", "point_id"]

MIRROR_KEY = "mirror"
SCROLL_BATCH = 1024


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
            self._shard = self._load_shard()
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
        self.compacted_rows_on_open = 0
        self.mirror = VectorMirror(self.directory.with_name(self.directory.name + ".mirror"))
        self.recopied_on_open = self._load_mirror()

    def _load_shard(self):
        """The existing shard; `Conflict` when another process has it open (its write-ahead log is
        locked: a `pagelens serve` and an embedded `pagelens index add` on one data directory)."""
        try:
            return self._q.EdgeShard.load(str(self.directory))
        except Exception as error:
            if "WouldBlock" not in str(error):
                raise
            raise Conflict(
                f"{self.directory} is open in another process (a running pagelens serve?); stop it, "
                "or go through that server (pagelens index add/search --url)"
            ) from None

    def _scroll(self, condition, *, with_payload: bool) -> list:
        """Every point matching `condition` (records with payload if asked, without vectors)."""
        q = self._q
        records, offset = [], None
        while True:
            batch, offset = self._shard.scroll(
                q.ScrollRequest(offset=offset, limit=SCROLL_BATCH, filter=condition, with_payload=with_payload)
            )
            records.extend(batch)
            if offset is None:
                return records

    def _load_mirror(self) -> int:
        """Publish every complete page the mirror file holds; copy the others' vectors from the shard
        into it first. Returns how many pages were copied."""
        missing = []
        with self._lock:
            for record in self._scroll(self._complete_filter(), with_payload=True):
                location = Location.from_payload(record.payload.get(MIRROR_KEY))
                if location is not None and self.mirror.holds(location):
                    self.mirror.publish(record.id, location)
                else:
                    missing.append(record.id)
            recopied: dict[int, Location] = {}
            for start in range(0, len(missing), 64):
                for record in self._shard.retrieve(missing[start : start + 64], False, [PAGE_VECTOR]):
                    page = np.asarray(record.vector[PAGE_VECTOR], dtype=np.float32)
                    recopied[record.id] = self.mirror.append(
                        page.astype(np.float16), cluster_pool(page).astype(np.float16)
                    )
            if recopied:
                self._record_locations(recopied)
            for point, location in recopied.items():
                self.mirror.publish(point, location)
            self.mirror.drop_unused_files()
            if self.mirror.should_compact():
                self.compacted_rows_on_open = self.mirror.compact(self._record_locations)
            self.mirror.warm()
        return len(missing)

    def _record_locations(self, moved: dict[int, Location]) -> None:
        """Store pages' new mirror locations in their payloads, durably (a compaction's last step
        before the old file goes)."""
        q = self._q
        for point, location in moved.items():
            self._shard.update(q.UpdateOperation.set_payload([point], {MIRROR_KEY: location.to_payload()}))
        self._shard.flush()

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
        written: list[tuple[int, Location]] = []
        for number, vectors in enumerate(pages, start=1):
            named = page_vectors(number, vectors)
            payload = page_payload(document_id, number, name, metadata)
            with self._lock:
                location = self.mirror.append(named[PAGE_VECTOR], named[POOLED_VECTOR])  # fsynced before the point
                point = q.Point(point_id(document_id, number), named, payload | {MIRROR_KEY: location.to_payload()})
                self._shard.update(q.UpdateOperation.upsert_points([point]))
            written.append((point.id, location))
        count = len(written)
        with self._lock:
            document = q.Filter(must=[self._match("document_id", document_id)])
            stale = q.Filter(
                must=[self._match("document_id", document_id), q.FieldCondition("page", range=q.RangeFloat(gt=count))]
            )
            self._shard.update(q.UpdateOperation.delete_points_by_filter(stale))  # pages of an older, longer version
            self._shard.update(q.UpdateOperation.set_payload_by_filter(document, {"status": COMPLETE}))
            self._shard.flush()
            for point, location in written:
                self.mirror.publish(point, location)
            for number in range(count + 1, count + 1 + len(self.mirror)):  # an older version's pages past the end
                if point_id(document_id, number) not in self.mirror:
                    break
                self.mirror.drop(point_id(document_id, number))
        return count

    def delete_document(self, document_id: str) -> int:
        """Remove a document's pages; return how many there were."""
        q = self._q
        document = q.Filter(must=[self._match("document_id", document_id)])
        with self._lock:
            points = [record.id for record in self._scroll(document, with_payload=False)]
            self._shard.update(q.UpdateOperation.delete_points_by_filter(document))
            self._shard.flush()
            for point in points:
                self.mirror.drop(point)
        return len(points)

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
        prefetch: int = 100,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages by MaxSim against a `(q, 128)` query, scored on the mirror. `exact` scores
        every page; `fast` rescores the `prefetch` pages whose centroids score best."""
        query = check_query(query, k, mode, prefetch)
        with self._lock:
            allowed = None
            if filter:
                allowed = {record.id for record in self._scroll(self._complete_filter(filter), with_payload=False)}
            ranked = self.mirror.search(query, k, fast=mode == "fast", prefetch=prefetch, allowed=allowed)
            payloads = {r.id: r.payload for r in self._shard.retrieve([point for point, _ in ranked], True, False)}
        return [to_hit(payloads[point], score) for point, score in ranked]

    def qdrant_search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = 100,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """`search` run by Qdrant Edge's own MaxSim (the fast mode prefetches on `pooled`): the same
        ranking, slower; kept to cross-check the mirror and to benchmark against it."""
        q = self._q
        query = check_query(query, k, mode, prefetch)
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
            self.mirror.close()
