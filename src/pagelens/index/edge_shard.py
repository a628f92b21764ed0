"""The Qdrant Edge shard under both embedded page stores (index/edge_store.py): creating and
opening it, its schema, filters, and the writes and reads that do not depend on what a page is.

The shard's schema is read back from the vector config Qdrant Edge keeps in the shard directory
(`edge_config.json`, written at creation): `page`'s size, and whether it has a multivector
config. Nothing else is written beside the shard for it, so a shard created before schemas
existed (a multi-vector `page` of 128 and `pooled`) opens as MULTI_VECTOR_128 unchanged. A shard
that keeps no vectors at all (a multi-vector store whose vectors live in its mirror files only)
has no dense vector; Qdrant Edge needs one vector config, so it gets an empty sparse one,
`VECTORS_ELSEWHERE`, which is also how its schema reads back (MULTI_VECTOR_128).

Writes follow one template, `add_document`; the store built on the shard adds to it through
hooks: `_named_vectors` (a page's named vectors), `_stage` (called under the lock before a
page's point is written; returns payload fields to store with it), `_point_vectors` (which of
the named vectors the point itself holds), `_publish` (after the document is complete and
flushed) and `_forget` (after pages are deleted); reads through two more, `_retrieved_vectors`
and `_stored_vectors` (where a page read finds the vectors). The defaults suit a store that keeps
nothing outside the shard.

Whole-document atomicity: a document's pages are written with `status: "ingesting"` and flipped
to "complete" in one update after the last page, then flushed; search only sees complete ones, and
opening a store deletes incomplete ones (an ingest killed half-way). Qdrant Edge's write-ahead log
replays acknowledged updates after a crash, so a completed document is never lost. (The status is
a keyword, not a boolean: qdrant-edge-py 0.9.0 reads a Python bool in MatchValue as the integer 0 or
1, so boolean filters pass NumPy booleans, which it reads as booleans.)

Metadata filters become Qdrant Edge conditions (`_condition`): a range of dates is a RangeDateTime,
which Qdrant Edge checks against ISO 8601 string payloads without any payload index (measured on
20,000 pages: ~117 ms a scroll, as for a RangeFloat or a keyword match on an unindexed field).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pagelens.codecs.metadata import Condition
from pagelens.errors import BackendFailure, Conflict
from pagelens.index.pages import (
    COMPLETE,
    INGESTING,
    MULTI_VECTOR_128,
    PAGE_VECTOR,
    POOLED_VECTOR,
    READ_BATCH,
    PageSchema,
    layout_rows,
    page_payload,
    page_vectors,
    point_id,
    resolve_schema,
    search_conditions,
    stored_page,
    stored_pages,
    vectors_in_point,
)
from pagelens.index.patches import PATCHES_KEY, split_page

log = logging.getLogger(__name__)

EDGE_DEFAULT_PREFETCH = 100  # fast-mode candidates rescored exactly when a search names none
CONFIG_FILE = "edge_config.json"  # Qdrant Edge's own record of the shard's config
WAL_DIRECTORY = "wal"  # Qdrant Edge's write-ahead log, inside the shard directory
SCROLL_BATCH = 1024
VECTORS_ELSEWHERE = "vectors-in-mirror"  # the empty sparse vector of a shard that keeps payloads only


def _stored_config(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise TypeError(f"expected an object, got {type(config).__name__}")
        return config
    except (ValueError, TypeError) as error:
        raise BackendFailure(f"cannot read the shard config {path}: {error!r}") from None


def stored_edge_schema(directory: str | Path) -> PageSchema | None:
    """The schema of the shard in `directory`, from its vector config; None when there is no shard."""
    config = _stored_config(directory)
    if config is None:
        return None
    try:
        if VECTORS_ELSEWHERE in (config.get("sparse_vectors") or {}):
            return MULTI_VECTOR_128
        page = config["vectors"][PAGE_VECTOR]
        return PageSchema(int(page["size"]), multi_vector=page.get("multivector_config") is not None)
    except (ValueError, KeyError, TypeError) as error:
        raise BackendFailure(f"cannot read the page schema of the shard {directory}: {error!r}") from None


def shard_keeps_page_vectors(directory: str | Path) -> bool:
    """Whether the shard in `directory` stores each page's vectors (a `page` vector), rather than
    its payload only."""
    config = _stored_config(directory)
    return config is not None and PAGE_VECTOR in (config.get("vectors") or {})


def shard_vectors(qdrant_edge, schema: PageSchema) -> dict[str, Any]:
    """The named vectors of a new shard: float16, dot product, no HNSW graph (every search is exact);
    multi-vector pages get MaxSim and a `pooled` vector too."""

    def params(multivector: bool):
        return qdrant_edge.EdgeVectorParams(
            size=schema.dim,
            distance=qdrant_edge.Distance.Dot,
            multivector_config=(
                qdrant_edge.MultiVectorConfig(qdrant_edge.MultiVectorComparator.MaxSim) if multivector else None
            ),
            datatype=qdrant_edge.VectorStorageDatatype.Float16,
            hnsw_config=qdrant_edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),  # exact only
        )

    if schema.multi_vector:
        return {PAGE_VECTOR: params(True), POOLED_VECTOR: params(True)}
    return {PAGE_VECTOR: params(False)}


class EdgeShardStore:
    """One collection's pages in a Qdrant Edge shard directory, created with `schema` (default
    MULTI_VECTOR_128) when missing, else opened with the one it stores (`Conflict` when `schema`
    says otherwise, or when another process has the shard open). Thread-safe (one lock).

    A subclass serves one kind of page (`multi_vector`) and implements `search`."""

    multi_vector: ClassVar[bool]
    default_prefetch = EDGE_DEFAULT_PREFETCH

    def __init__(
        self, directory: str | Path, *, schema: PageSchema | None = None, keep_incomplete: Iterable[str] = ()
    ) -> None:
        import qdrant_edge

        self._q = qdrant_edge
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self.recovered: str | None = None  # what opening had to give up, when the log was unreplayable
        stored = stored_edge_schema(self.directory)
        self.schema = resolve_schema(f"the Qdrant Edge shard {self.directory}", stored, schema)
        if self.schema.multi_vector != self.multi_vector:
            raise Conflict(
                f"the Qdrant Edge shard {self.directory} {'holds' if stored else 'is for'} {self.schema} pages, "
                f"which {type(self).__name__} does not serve (open it with open_edge_store)"
            )
        if stored is not None:
            self._shard = self._load_shard()
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._shard = qdrant_edge.EdgeShard.create(str(self.directory), self._new_shard_config())
            for name in ("document_id", "status"):
                self._shard.update(
                    qdrant_edge.UpdateOperation.create_field_index(name, qdrant_edge.PayloadSchemaType.Keyword)
                )
        self.purged_on_open = self.purge_incomplete(keep=keep_incomplete)

    def _load_shard(self):
        """The existing shard; `Conflict` when another process has it open (its write-ahead log is
        locked: a `pagelens serve` and an embedded `pagelens index add` on one data directory).
        A write-ahead log that cannot be replayed is moved aside and the shard opened from its
        last flushed state (see `recovered`); any other failure is a `BackendFailure` naming it."""
        try:
            return self._q.EdgeShard.load(str(self.directory))
        except BaseException as error:  # qdrant-edge's Rust panics arrive as BaseException
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            if "WouldBlock" in str(error):
                raise Conflict(
                    f"{self.directory} is open in another process (a running pagelens serve?); stop it, "
                    "or go through that server (pagelens index add/search --url)"
                ) from None
            if "WAL" not in str(error) or not (self.directory / WAL_DIRECTORY).exists():
                raise BackendFailure(f"cannot open the Qdrant Edge shard {self.directory}: {error}") from None
            return self._open_without_wal(error)

    def _open_without_wal(self, error: BaseException):
        """Open the shard from its segments alone, the unreplayable log kept beside it. Every write
        pagelens acknowledged was flushed into the segments first (a document is flushed when it
        completes, a delete when it is done), so what is lost is only what no caller was told was
        stored: pages of ingests that were still running."""
        aside = self.directory.with_name(f"{self.directory.name}.unreplayable-wal-{int(time.time())}")
        os.replace(self.directory / WAL_DIRECTORY, aside)
        try:
            shard = self._q.EdgeShard.load(str(self.directory))
        except BaseException as again:
            if isinstance(again, KeyboardInterrupt | SystemExit):
                raise
            raise BackendFailure(
                f"cannot open the Qdrant Edge shard {self.directory}: its write-ahead log could not be replayed "
                f"({error}; moved to {aside}) and its segments alone do not open either: {again}"
            ) from None
        self.recovered = (
            f"the write-ahead log could not be replayed ({error}); the shard was opened from its last flushed "
            f"state, which holds every document stored whole (pages of uploads still running then are lost); "
            f"the log was moved to {aside}"
        )
        log.error("Qdrant Edge shard %s: %s", self.directory, self.recovered)
        return shard

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

    # ---------------------------------------------------------------- filters and queries
    def _match(self, key: str, value: Any):
        q = self._q
        return q.FieldCondition(key, match=q.MatchValue(value))

    def _condition(self, condition: Condition):
        """A checked condition as Qdrant Edge's: a match, any of several, or a range of numbers or dates."""
        q, key = self._q, condition.key
        if condition.dates:  # UTC datetimes, as RFC 3339 (isoformat: strftime writes year 1 as "1")
            bounds = {op: bound.isoformat() for op, bound in condition.bounds}
            return q.FieldCondition(key, range=q.RangeDateTime(**bounds))
        if condition.bounds:
            return q.FieldCondition(key, range=q.RangeFloat(**{op: float(bound) for op, bound in condition.bounds}))
        values = condition.any_of
        if isinstance(values[0], bool):  # NumPy bools (see above); MatchAny takes none: one match each, any of them
            matches = [q.FieldCondition(key, match=q.MatchValue(np.bool_(value))) for value in values]
            return matches[0] if len(matches) == 1 else q.Filter(should=matches)
        if len(values) == 1:
            return q.FieldCondition(key, match=q.MatchValue(values[0]))
        return q.FieldCondition(key, match=q.MatchAny(list(values)))

    def _complete_filter(self, extra: dict[str, Any] | None = None):
        return self._q.Filter(must=[self._condition(condition) for condition in search_conditions(extra)])

    def _exact_request(self, query: np.ndarray, k: int, filter: dict[str, Any] | None):
        """Qdrant Edge's exact search of `page` over the complete pages matching `filter`."""
        q = self._q
        nearest = q.Query.Nearest(query, using=PAGE_VECTOR)
        return q.QueryRequest(limit=k, query=nearest, filter=self._complete_filter(filter), with_payload=True,
                              params=q.SearchParams(exact=True))  # fmt: skip

    # ---------------------------------------------------------------- hooks
    def _new_shard_config(self):
        """The EdgeConfig a new shard is created with: the schema's vectors (`shard_vectors`)."""
        return self._q.EdgeConfig(vectors=shard_vectors(self._q, self.schema))

    def _point_vectors(self, named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The named vectors a page's point holds in the shard: all of them."""
        return named

    def _retrieved_vectors(self) -> list[str] | bool:
        """What a page read retrieves with each point: its `page` vector."""
        return [PAGE_VECTOR]

    def _stored_vectors(self, record: Any) -> np.ndarray:
        """A complete page's vectors, float16, from its retrieved point (called under the lock)."""
        return vectors_in_point(record)

    def _named_vectors(self, number: int, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Page `number`'s named vectors as the shard stores them (checked against the schema)."""
        return page_vectors(number, vectors, self.schema)

    def _stage(self, named: dict[str, np.ndarray]) -> dict[str, Any]:
        """Called under the lock before a page's point is written; payload fields to store with it."""
        return {}

    def _publish(self, document_id: str, written: list[tuple[int, dict[str, Any]]]) -> None:
        """Called under the lock once a document is complete and flushed, with each page's point id
        and the fields `_stage` gave it, in page order."""

    def _restage(self, point: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Called under the lock for each page an earlier, interrupted ingest stored, when an ingest
        of its document resumes: the fields `_stage` gave it (to publish with the new pages)."""
        return {}

    def _forget(self, points: list[int]) -> None:
        """Called under the lock after these points were deleted and the deletion flushed."""

    # ---------------------------------------------------------------- writes
    def add_document(
        self,
        document_id: str,
        pages: Iterable[np.ndarray],
        *,
        name: str = "",
        metadata: dict[str, Any] | None = None,
        first_page: int = 1,
    ) -> int:
        """Store a document's pages (arrays of the schema's shape, in page order) atomically; return
        the page count.

        `pages` may be a generator: pages are written as they come, then the document is marked
        complete in one update and flushed. With `first_page` > 1, `pages` starts there: pages
        1..first_page-1 are those an interrupted ingest of this document already stored
        (`stored_pages`), and the document completes with them.
        """
        q = self._q
        written = self._stored_prefix(document_id, first_page)
        for number, page in enumerate(pages, start=first_page):
            vectors, layout = split_page(page)
            named = self._named_vectors(number, vectors)
            payload = page_payload(document_id, number, name, metadata,
                                   patches=layout_rows(layout, named[PAGE_VECTOR], self.schema))  # fmt: skip
            with self._lock:
                staged = self._stage(named)
                point = q.Point(point_id(document_id, number), self._point_vectors(named), payload | staged)
                self._shard.update(q.UpdateOperation.upsert_points([point]))
            written.append((point.id, staged))
        with self._lock:
            document = q.Filter(must=[self._match("document_id", document_id)])
            stale = q.Filter(
                must=[
                    self._match("document_id", document_id),
                    q.FieldCondition("page", range=q.RangeFloat(gt=len(written))),
                ]
            )
            self._shard.update(q.UpdateOperation.delete_points_by_filter(stale))  # pages of an older, longer version
            self._shard.update(q.UpdateOperation.set_payload_by_filter(document, {"status": COMPLETE}))
            self._shard.flush()
            self._publish(document_id, written)
        return len(written)

    def _stored_prefix(self, document_id: str, first_page: int) -> list[tuple[int, dict[str, Any]]]:
        """`(point, staged fields)` of pages 1..first_page-1 of `document_id`, which must be stored."""
        if first_page <= 1:
            return []
        with self._lock:
            records = self._scroll(self._q.Filter(must=[self._match("document_id", document_id)]), with_payload=True)
            by_page = {int(record.payload["page"]): record for record in records}
            if any(page not in by_page for page in range(1, first_page)):
                stored = sorted(by_page)
                raise ValueError(f"document {document_id!r} has pages {stored} stored, not 1..{first_page - 1}")
            return [(by_page[page].id, self._restage(by_page[page].id, by_page[page].payload))
                    for page in range(1, first_page)]  # fmt: skip

    def stored_pages(self, document_id: str) -> int:
        """How many pages of `document_id` are stored, complete or not (an ingest writes them in
        order, so an interrupted one stored pages 1..n)."""
        q = self._q
        with self._lock:
            return self._shard.count(q.CountRequest(filter=q.Filter(must=[self._match("document_id", document_id)])))

    def delete_document(self, document_id: str) -> int:
        """Remove a document's pages; return how many there were."""
        q = self._q
        document = q.Filter(must=[self._match("document_id", document_id)])
        with self._lock:
            points = [record.id for record in self._scroll(document, with_payload=False)]
            self._shard.update(q.UpdateOperation.delete_points_by_filter(document))
            self._shard.flush()
            self._forget(points)
        return len(points)

    def set_metadata(self, document_id: str, metadata: dict[str, Any]) -> int:
        """Replace the metadata of every page of a document, flushed; return how many pages it has."""
        q = self._q
        document = q.Filter(must=[self._match("document_id", document_id)])
        with self._lock:
            pages = self._shard.count(q.CountRequest(filter=document))
            if pages:
                self._shard.update(q.UpdateOperation.set_payload_by_filter(document, {"metadata": metadata}))
                self._shard.flush()
        return pages

    def purge_incomplete(self, keep: Iterable[str] = ()) -> int:
        """Delete the pages of documents whose ingest never completed, but for the documents in
        `keep` (ingests that will resume); return how many pages went."""
        q = self._q
        incomplete = q.Filter(
            must=[self._match("status", INGESTING)],
            must_not=[self._match("document_id", document_id) for document_id in keep],
        )
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

    def iter_pages(self, document_id: str) -> Iterator[tuple[int, np.ndarray]]:
        """A complete document's pages, READ_BATCH at a time, in page order: `(page, (n_tokens, 128)
        or (dim,) float16)`, each from where the store keeps it (`_stored_vectors`)."""
        count = self.page_count(document_id)
        for first in range(1, count + 1, READ_BATCH):
            numbers = range(first, min(first + READ_BATCH, count + 1))
            with self._lock:
                ids = [point_id(document_id, n) for n in numbers]
                records = self._shard.retrieve(ids, ["status"], self._retrieved_vectors())
                pages = stored_pages(document_id, numbers, records, self._stored_vectors)
            yield from pages

    def read_page(self, document_id: str, number: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        """One complete page: `(vectors float16, patch layout or None)`."""
        with self._lock:
            records = self._shard.retrieve(
                [point_id(document_id, number)], ["status", PATCHES_KEY], self._retrieved_vectors()
            )
            return stored_page(document_id, number, records, self._stored_vectors)

    def page_layouts(self, document_id: str) -> dict[int, dict[str, Any]]:
        """page -> patch layout, for a document's pages that have one (payloads only, no vectors)."""
        with self._lock:
            records = self._scroll(self._q.Filter(must=[self._match("document_id", document_id)]), with_payload=True)
        return {int(r.payload["page"]): r.payload[PATCHES_KEY] for r in records if r.payload.get(PATCHES_KEY)}

    def close(self) -> None:
        with self._lock:
            self._shard.close()
