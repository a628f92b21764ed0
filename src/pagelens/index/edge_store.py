"""Embedded page stores on Qdrant Edge (the Qdrant engine in-process, on disk): one shard per
collection, one point per page. `open_edge_store` opens (or creates) one with the right class
for its schema:

- `EdgePageStore`, multi-vector pages (MULTI_VECTOR_128). Each page's vectors, its full
  multi-vector (`page`, float16) and its cluster centroids (`pooled`) for the fast mode's
  prefetch, are stored once, in the vector mirror's files beside the shard (index/mirror.py),
  where search scores them with torch matmuls; the shard's point holds the payload:
  `document_id`, `page` (1-based), `name`, `metadata`, `status`, and `mirror` (where the page's
  rows sit). The shard answers filters and payloads; the rows of a page are fsynced before its
  point is written, so a stored point's vectors are always there.
  Stores created before 2026-12 also keep each page's vectors in the shard (twice the disk; new
  stores can be asked for it, `keep_vectors_in_shard`): opening one re-copies from the shard
  any page the mirror files lost, and `qdrant_search` runs the same search in Qdrant Edge's own
  MaxSim, to cross-check (`pagelens bench search` times it against the mirror).
- `SingleVectorEdgeStore`, single-vector pages (`PageSchema(dim, multi_vector=False)`): each point
  holds one `(dim,)` float16 vector (`page`) and the same payload without `mirror`. Qdrant Edge
  scores a dense dot product over every page quickly, so there is no mirror and no centroids:
  both modes are Qdrant Edge's exact search.

The two are one shard store (index/edge_shard.py: creation, the schema, whole-document
atomicity, deletes, counts) with the mirror added through its hooks, rather than one class
branching on the schema in every method: the mirror is the multi-vector store's whole difference.
A shard's schema is read back from its own vector config, so shards written before schemas
existed open as multi-vector stores, unchanged.

Why the vectors are not in the shard: on disk they would be there twice, and handing a page's
multi-vector to Qdrant Edge costs more than scoring it (its Python binding converts the arrays
element by element: ~2.5 ms for a page of 80 rows, ~10 ms for 750, measured with qdrant-edge-py
0.9.0), which an ingest pays on every page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pagelens.errors import BackendFailure, Conflict, NotFound
from pagelens.index import centroids
from pagelens.index.centroids import CENTROID_BYTES_PER_PAGE
from pagelens.index.edge_shard import (
    EDGE_DEFAULT_PREFETCH,
    VECTORS_ELSEWHERE,
    EdgeShardStore,
    shard_keeps_page_vectors,
    stored_edge_schema,
)
from pagelens.index.mirror import Location, VectorMirror
from pagelens.index.pages import (
    COMPLETE,
    INGESTING,
    PAGE_VECTOR,
    POOLED_VECTOR,
    PageSchema,
    SearchHit,
    SearchMode,
    check_query,
    cluster_pool,
    page_vectors,
    point_id,
    resolve_schema,
    to_hit,
)

__all__ = [
    "COMPLETE",
    "EDGE_DEFAULT_PREFETCH",
    "INGESTING",
    "EdgePageStore",
    "EdgeShardStore",
    "SearchHit",
    "SearchMode",
    "SingleVectorEdgeStore",
    "open_edge_store",
    "point_id",
]

log = logging.getLogger(__name__)

MIRROR_KEY = "mirror"
STEP_PAGES = 256  # pages an exact re-run (the recall check) scores per hold of the store's lock


def open_edge_store(
    directory: str | Path, *, schema: PageSchema | None = None, keep_incomplete: Iterable[str] = ()
) -> EdgeShardStore:
    """The page store in the Qdrant Edge shard at `directory`: opened with the schema it stores, or
    created with `schema` (default MULTI_VECTOR_128). `Conflict` when `schema` contradicts the stored
    one. Incomplete documents are purged at open, but for those in `keep_incomplete` (to resume)."""
    resolved = resolve_schema(f"the Qdrant Edge shard {directory}", stored_edge_schema(directory), schema)
    store_class = EdgePageStore if resolved.multi_vector else SingleVectorEdgeStore
    return store_class(directory, schema=resolved, keep_incomplete=keep_incomplete)


class SingleVectorEdgeStore(EdgeShardStore):
    """Single-vector pages in a Qdrant Edge shard, searched by Qdrant Edge's exact dot product."""

    multi_vector = False

    def search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = EDGE_DEFAULT_PREFETCH,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages by the dot product of their `(dim,)` vector with a `(dim,)` query, over every
        complete page matching `filter`. `fast` is the same exact search (no graph or prefetch
        would be quicker), so `prefetch` is only checked. Qdrant Edge rounds the query to float16,
        as the pages are stored, and sums in float32."""
        query = check_query(query, k, mode, prefetch, self.schema)
        request = self._exact_request(query, k, filter)
        with self._lock:
            points = self._shard.query(request)
        return [to_hit(point.payload, point.score) for point in points]


class EdgePageStore(EdgeShardStore):
    """Multi-vector pages in a Qdrant Edge shard, searched on the vector mirror beside it."""

    multi_vector = True

    def __init__(
        self,
        directory: str | Path,
        *,
        schema: PageSchema | None = None,
        keep_incomplete: Iterable[str] = (),
        keep_vectors_in_shard: bool = False,
    ) -> None:
        """`keep_vectors_in_shard`: a store created now also keeps each page's vectors in the shard
        (the layout before 2026-12, which `qdrant_search` needs); an existing store keeps its layout."""
        self._create_with_vectors = keep_vectors_in_shard
        super().__init__(directory, schema=schema, keep_incomplete=keep_incomplete)
        self.vectors_in_shard = shard_keeps_page_vectors(self.directory)
        self.compacted_rows_on_open = 0
        self.mirror = VectorMirror(self.directory.with_name(self.directory.name + ".mirror"))
        try:
            self.recopied_on_open = self._load_mirror()
        except BaseException:
            self.close()
            raise

    def _check_memory(self) -> None:
        """`BackendFailure` naming the figures when the fast mode's centroids (CENTROID_BYTES_PER_PAGE
        a page, held in RAM) would not fit in the memory available: refused at open, not killed
        for it later."""
        needed = len(self.mirror) * CENTROID_BYTES_PER_PAGE
        available = centroids.available_memory_bytes()
        if available is not None and needed > available:
            raise BackendFailure(
                f"the collection in {self.directory.parent} has {len(self.mirror)} pages, whose centroids for the fast "
                f"mode take {needed / 2**30:.2f} GiB of RAM ({CENTROID_BYTES_PER_PAGE / 1024:.1f} KiB a page), but "
                f"only {available / 2**30:.2f} GiB is available; free memory, run on a machine with more, or keep "
                "the collection on a Qdrant server (PAGELENS_QDRANT_URL)"
            )

    def _load_mirror(self) -> int:
        """Publish every complete page the mirror files hold. A store that keeps vectors in its shard
        copies the others' vectors from there first (returns how many); in one that does not, a page
        whose rows are gone is a `BackendFailure` naming them (the files were cut or deleted)."""
        missing = []
        with self._lock:
            for record in self._scroll(self._complete_filter(), with_payload=True):
                location = Location.from_payload(record.payload.get(MIRROR_KEY))
                if location is not None and self.mirror.holds(location):
                    self.mirror.publish(record.id, location)
                else:
                    missing.append(record)
            resuming = self._resumable_locations()
            if missing and not self.vectors_in_shard:
                documents = sorted({str(record.payload.get("document_id")) for record in missing})
                raise BackendFailure(
                    f"the vector files in {self.mirror.directory} lack the rows of {len(missing)} stored pages (of "
                    f"documents {', '.join(documents[:5])}{', ...' if len(documents) > 5 else ''}): the files were "
                    "cut or deleted outside pagelens. Restore them from a backup, or import the collection's snapshot"
                )
            missing = [record.id for record in missing]
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
            self.mirror.drop_unused_files(keep={location.generation for location in resuming})
            if self.mirror.should_compact() and (self.vectors_in_shard or not resuming):
                # a compaction keeps published pages only: an ingest to resume would lose its rows
                self.compacted_rows_on_open = self.mirror.compact(self._record_locations)
            self._check_memory()
            self.mirror.warm()
        return len(missing)

    def _resumable_locations(self) -> list[Location]:
        """Where the rows of the incomplete pages kept at open (ingests to resume) sit."""
        kept = self._scroll(self._q.Filter(must=[self._match("status", INGESTING)]), with_payload=True)
        locations = [Location.from_payload(record.payload.get(MIRROR_KEY)) for record in kept]
        return [location for location in locations if location is not None]

    def _record_locations(self, moved: dict[int, Location]) -> None:
        """Store pages' new mirror locations in their payloads, durably (a compaction's last step
        before the old file goes)."""
        q = self._q
        for point, location in moved.items():
            self._shard.update(q.UpdateOperation.set_payload([point], {MIRROR_KEY: location.to_payload()}))
        self._shard.flush()

    # ---------------------------------------------------------------- the shard store's hooks
    def _new_shard_config(self):
        """A shard of payloads only (an empty sparse vector, as Qdrant Edge needs one), or the
        earlier layout's `page` and `pooled` vectors when asked for."""
        if self._create_with_vectors:
            return super()._new_shard_config()
        return self._q.EdgeConfig(sparse_vectors={VECTORS_ELSEWHERE: self._q.EdgeSparseVectorParams()})

    def _point_vectors(self, named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return named if self.vectors_in_shard else {}

    def _named_vectors(self, number: int, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """`{page: (n, 128) float16, pooled: (POOLED_ROWS, 128) float16}` (the schema is MULTI_VECTOR_128)."""
        return page_vectors(number, vectors)

    def _stage(self, named: dict[str, np.ndarray]) -> dict[str, Any]:
        """Append the page's rows to the mirror (fsynced before its point is written); its payload
        records where they are."""
        location = self.mirror.append(named[PAGE_VECTOR], named[POOLED_VECTOR])
        return {MIRROR_KEY: location.to_payload()}

    def _restage(self, point: int, payload: dict[str, Any]) -> dict[str, Any]:
        """An earlier ingest's page: its mirror location (its rows copied again from the shard when
        the mirror no longer holds them, in a store that keeps them there)."""
        location = Location.from_payload(payload.get(MIRROR_KEY))
        if location is None or not self.mirror.holds(location):
            if not self.vectors_in_shard:
                raise BackendFailure(
                    f"page {payload.get('page')} of document {payload.get('document_id')!r}, stored by an "
                    f"interrupted ingest, has no rows in the vector files of {self.mirror.directory}"
                )
            (record,) = self._shard.retrieve([point], False, [PAGE_VECTOR])
            page = np.asarray(record.vector[PAGE_VECTOR], dtype=np.float32)
            location = self.mirror.append(page.astype(np.float16), cluster_pool(page).astype(np.float16))
            self._record_locations({point: location})
        return {MIRROR_KEY: location.to_payload()}

    def _publish(self, document_id: str, written: list[tuple[int, dict[str, Any]]]) -> None:
        """Make the document's pages searchable on the mirror; drop an older version's pages past its end."""
        for point, staged in written:
            self.mirror.publish(point, Location.from_payload(staged[MIRROR_KEY]))  # type: ignore[arg-type]
        for number in range(len(written) + 1, len(written) + 1 + len(self.mirror)):
            if point_id(document_id, number) not in self.mirror:
                break
            self.mirror.drop(point_id(document_id, number))

    def _forget(self, points: list[int]) -> None:
        for point in points:
            self.mirror.drop(point)

    # ---------------------------------------------------------------- reads (the shard store's hooks)
    def _retrieved_vectors(self) -> bool:
        return False  # pages are read from the mirror, whatever the layout

    def _stored_vectors(self, record: Any) -> np.ndarray:
        """A complete page's `(n_tokens, 128)` float16 rows, copied from the mirror."""
        if record.id not in self.mirror:
            raise NotFound(f"page {record.payload.get('page')} of document {record.payload.get('document_id')!r} "
                           "is no longer stored")  # fmt: skip
        return self.mirror.page_rows(record.id)

    # ---------------------------------------------------------------- reads

    def search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = EDGE_DEFAULT_PREFETCH,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages by MaxSim against a `(q, 128)` query, scored on the mirror. `exact` scores
        every page; `fast` rescores the `prefetch` pages whose centroids score best."""
        query = check_query(query, k, mode, prefetch, self.schema)
        with self._lock:
            allowed = None
            if filter:
                allowed = {record.id for record in self._scroll(self._complete_filter(filter), with_payload=False)}
            ranked = self.mirror.search(query, k, fast=mode == "fast", prefetch=prefetch, allowed=allowed)
            payloads = {r.id: r.payload for r in self._shard.retrieve([point for point, _ in ranked], True, False)}
        missing = [point for point, _ in ranked if point not in payloads]
        if missing:  # a mirror entry whose point is gone: a bug to report, not a reason to fail the search
            log.error("Qdrant Edge shard %s: mirror rows of points %s have no point; left out", self.directory, missing)
        return [to_hit(payloads[point], score) for point, score in ranked if point in payloads]

    def exact_search_in_steps(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        pages_per_step: int = STEP_PAGES,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> list[SearchHit] | None:
        """`search(mode="exact")` holding the store's lock for `pages_per_step` pages at a time, so a
        search arriving meanwhile waits for one step (a few ms), not the whole scan: the background
        recall check (index/recall.py). Pages added or removed during the scan may or may not count.
        None once `cancelled()` is true (checked between steps)."""
        query = check_query(query, k, "exact", 1, self.schema)
        with self._lock:
            allowed = None
            if filter:
                allowed = {record.id for record in self._scroll(self._complete_filter(filter), with_payload=False)}
            points = self.mirror.points_in_file_order(allowed)
        best_points, best_scores = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        for start in range(0, len(points), pages_per_step):
            if cancelled():
                return None
            with self._lock:
                step = [point for point in points[start : start + pages_per_step] if point in self.mirror]
                scores = self.mirror.exact_scores(query, step) if step else np.zeros(0, dtype=np.float32)
            best_points = np.concatenate([best_points, np.asarray(step, dtype=np.int64)])
            best_scores = np.concatenate([best_scores, scores])
            keep = np.argsort(-best_scores, kind="stable")[:k]
            best_points, best_scores = best_points[keep], best_scores[keep]
        with self._lock:
            found = self._shard.retrieve(best_points.tolist(), True, False)
        payloads = {record.id: record.payload for record in found}
        return [to_hit(payloads[int(p)], float(s)) for p, s in zip(best_points, best_scores, strict=True)
                if int(p) in payloads]  # fmt: skip

    def qdrant_search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = EDGE_DEFAULT_PREFETCH,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """`search` run by Qdrant Edge's own MaxSim (the fast mode prefetches on `pooled`): the same
        ranking, slower; kept to cross-check the mirror and to benchmark against it. `Conflict` for
        a store whose shard holds no vectors (see `keep_vectors_in_shard`)."""
        q = self._q
        if not self.vectors_in_shard:
            raise Conflict(f"the Qdrant Edge shard {self.directory} keeps no vectors (they are in its mirror files)")
        query = check_query(query, k, mode, prefetch, self.schema)
        if mode == "exact":
            request = self._exact_request(query, k, filter)
        else:
            condition = self._complete_filter(filter)
            candidates = q.Prefetch(limit=max(prefetch, k), query=q.Query.Nearest(query, using=POOLED_VECTOR),
                                    filter=condition, params=q.SearchParams(exact=True))  # fmt: skip
            nearest = q.Query.Nearest(query, using=PAGE_VECTOR)
            request = q.QueryRequest(limit=k, prefetches=[candidates], query=nearest, with_payload=True)
        with self._lock:
            points = self._shard.query(request)
        return [to_hit(p.payload, p.score) for p in points]

    def close(self) -> None:
        with self._lock:
            self._shard.close()
            self.mirror.close()
