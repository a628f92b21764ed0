"""A page store on a Qdrant server or cluster, through qdrant-client: one Qdrant collection per
pagelens collection, one point per page, the same layout and protocol as the Qdrant Edge store.

Schema (index/pages.py `PageSchema`, given when the collection is created, read back from its
vector params when it is opened; `Conflict` when a given one contradicts it):
- multi-vector: `page` is the full multi-vector (MAX_SIM, float16 storage, HNSW off (`m=0`) so every
  search is a full scan), `pooled` the page's cluster centroids for the fast mode's prefetch (same
  parameters); the fast mode prefetches on `pooled` and the server reranks on `page`;
- single-vector: `page` is one `(dim,)` vector (DOT, float16 storage) with an HNSW graph: `exact`
  scans every page (`SearchParams(exact=True)`), `fast` searches the graph with `hnsw_ef` =
  max(prefetch, k) (Qdrant scans instead while the collection is too small to index).
Keyword payload indexes on `document_id`, `status` and `owner`. Metadata filters become Qdrant
conditions (`_condition`): MatchValue, MatchAny (strings, integers), Range, and DatetimeRange, which
Qdrant checks against ISO 8601 string payloads with no payload index.

Whole-document atomicity: pages are upserted (`wait=True`) with `status: "ingesting"`, stale pages
of an older, longer version are deleted, then one `set_payload` flips the document to "complete";
search only sees complete pages. Opening a store deletes the incomplete pages *this owner* left (an
ingest killed half-way). The owner is an id of the pagelens data directory that wrote them, so two
pagelens servers sharing one Qdrant never purge each other's ingests in flight.

qdrant-client's local mode (`QdrantClient(":memory:")` or `path=...`) runs the same code but
ignores the float16 datatype (vectors are kept as sent, float16-rounded values in float64), HNSW
settings, search params and payload indexes: it always scans every point, which gives the same
rankings. It is not thread-safe, so calls on a local client are serialized.

Failures talking to the server become `BackendFailure` naming the URL (`NotFound` when the
collection has gone), never a raw client exception.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from pagelens.codecs.metadata import Condition
from pagelens.errors import BackendFailure, Conflict, NotFound
from pagelens.index.pages import (
    COMPLETE,
    INGESTING,
    PAGE_VECTOR,
    POOLED_VECTOR,
    READ_BATCH,
    PageSchema,
    SearchHit,
    SearchMode,
    check_query,
    layout_rows,
    page_payload,
    page_vectors,
    point_id,
    resolve_schema,
    search_conditions,
    stored_page,
    stored_pages,
    to_hit,
)
from pagelens.index.patches import PATCHES_KEY, split_page

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

QDRANT_DEFAULT_PREFETCH = 200  # fast-mode candidates when a search names none (the server reranks them)
INDEXED_FIELDS = ("document_id", "status", "owner")
_local_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def qdrant_location(client: QdrantClient) -> str:
    """Where a client points, for messages: its URL, host:port, or the local-mode path."""
    options = client.init_options
    if options.get("path"):
        return f"local mode at {options['path']}"
    if options.get("location") == ":memory:":
        return "local mode in memory"
    if options.get("url") or options.get("location"):
        return str(options.get("url") or options.get("location"))
    return f"{options.get('host') or 'localhost'}:{options.get('port')}"


def is_local(client: QdrantClient) -> bool:
    options = client.init_options
    return bool(options.get("path")) or options.get("location") == ":memory:"


@contextmanager
def qdrant_errors(where: str, collection: str | None = None) -> Iterator[None]:
    """Turn qdrant-client's exceptions into typed pagelens errors naming the server."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except UnexpectedResponse as error:
        if error.status_code == 404 and collection is not None:
            raise NotFound(f"Qdrant at {where} has no collection {collection!r}") from error
        if error.status_code == 409 and collection is not None:
            raise Conflict(f"Qdrant at {where} already has collection {collection!r}") from error
        if error.status_code in (401, 403):
            raise BackendFailure(
                f"Qdrant at {where} refused the request ({error.status_code}): check PAGELENS_QDRANT_API_KEY"
            ) from error
        detail = error.content.decode(errors="replace")[:300]
        raise BackendFailure(f"Qdrant at {where} answered {error.status_code}: {detail}") from error
    except ValueError as error:  # local mode's way of saying 404
        if collection is not None and f"Collection {collection} not found" in str(error):
            raise NotFound(f"Qdrant at {where} has no collection {collection!r}") from error
        raise
    except (ResponseHandlingException, httpx.HTTPError, OSError) as error:
        cause = error.source if isinstance(error, ResponseHandlingException) else error
        raise BackendFailure(f"cannot reach Qdrant at {where}: {cause or type(cause).__name__}") from error


def collection_vectors(schema: PageSchema) -> dict[str, Any]:
    """The named vectors of a new collection for `schema` (see the module docstring)."""
    from qdrant_client import models

    if not schema.multi_vector:
        page = models.VectorParams(size=schema.dim, distance=models.Distance.DOT, datatype=models.Datatype.FLOAT16)
        return {PAGE_VECTOR: page}
    multi = models.VectorParams(
        size=schema.dim,
        distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
        datatype=models.Datatype.FLOAT16,
        hnsw_config=models.HnswConfigDiff(m=0),  # no graph: exact full scans only
    )
    return {PAGE_VECTOR: multi, POOLED_VECTOR: multi}


def create_collection(client: QdrantClient, collection: str, schema: PageSchema) -> None:
    """Create the Qdrant collection with the page schema and its payload indexes."""
    from qdrant_client import models

    client.create_collection(collection, vectors_config=collection_vectors(schema))
    for name in INDEXED_FIELDS:
        client.create_payload_index(collection, name, field_schema=models.PayloadSchemaType.KEYWORD, wait=True)


def stored_schema(client: QdrantClient, collection: str) -> PageSchema:
    """The page schema of an existing collection, from its `page` vector's params."""
    vectors = client.get_collection(collection).config.params.vectors
    page = vectors.get(PAGE_VECTOR) if isinstance(vectors, dict) else None
    if page is None:
        raise Conflict(
            f"Qdrant collection {collection!r} at {qdrant_location(client)} has no {PAGE_VECTOR!r} vector: "
            "it is not a pagelens collection"
        )
    return PageSchema(page.size, multi_vector=page.multivector_config is not None)


class QdrantPageStore:
    """One collection's pages in a Qdrant collection: opened with the schema it stores, or created
    with `schema` (default MULTI_VECTOR_128) when missing; `Conflict` when `schema` contradicts the
    stored one. Opening purges this owner's incomplete pages but those in `keep_incomplete` (none
    with `purge=False`: a fan-out worker, whose coordinator purges). A PageStore (index/pages.py).
    The client is the caller's: `close` leaves it open."""

    default_prefetch = QDRANT_DEFAULT_PREFETCH
    recovered = None  # the server recovers its own write-ahead log

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        owner: str = "",
        schema: PageSchema | None = None,
        keep_incomplete: Iterable[str] = (),
        purge: bool = True,
    ) -> None:
        from qdrant_client import models

        self._m = models
        self.client = client
        self.collection = collection
        self.owner = owner
        self.where = qdrant_location(client)
        self._lock = _local_locks.setdefault(client, threading.Lock()) if is_local(client) else nullcontext()
        with self._calls():
            stored = stored_schema(client, collection) if client.collection_exists(collection) else None
            self.schema = resolve_schema(f"the Qdrant collection {collection!r} at {self.where}", stored, schema)
            if stored is None:
                create_collection(client, collection, self.schema)
        self.purged_on_open = self.purge_incomplete(keep=keep_incomplete) if purge else 0

    @contextmanager
    def _calls(self) -> Iterator[None]:
        with self._lock, qdrant_errors(self.where, self.collection):
            yield

    def _filter(self, *matches: tuple[str, Any]):
        m = self._m
        return m.Filter(must=[m.FieldCondition(key=key, match=m.MatchValue(value=value)) for key, value in matches])

    def _condition(self, condition: Condition):
        """A checked condition as Qdrant's: a match, any of several, or a range of numbers or dates."""
        m, key = self._m, condition.key
        if condition.dates:
            return m.FieldCondition(key=key, range=m.DatetimeRange(**dict(condition.bounds)))
        if condition.bounds:
            return m.FieldCondition(key=key, range=m.Range(**dict(condition.bounds)))
        values = condition.any_of
        if len(values) == 1:
            return m.FieldCondition(key=key, match=m.MatchValue(value=values[0]))
        if isinstance(values[0], bool):  # MatchAny takes no booleans: one match of each, any of them
            return m.Filter(should=[m.FieldCondition(key=key, match=m.MatchValue(value=value)) for value in values])
        return m.FieldCondition(key=key, match=m.MatchAny(any=list(values)))

    # ---------------------------------------------------------------- writes
    def add_document(
        self,
        document_id: str,
        pages: Iterable[Any],
        *,
        name: str = "",
        metadata: dict[str, Any] | None = None,
        first_page: int = 1,
    ) -> int:
        """Store a document's pages (arrays of the schema's shape, or `(array, patch layout)`, in page
        order) atomically; return the page count.

        `pages` may be a generator: each page is upserted as it comes, then the document is marked
        complete in one update. With `first_page` > 1, `pages` starts there, after the pages an
        interrupted ingest of this document stored (`stored_pages`).
        """
        count = first_page - 1
        for number, vectors in enumerate(pages, start=first_page):
            count += self.write_pages(document_id, [(number, vectors)], name=name, metadata=metadata)
        self.mark_complete(document_id, count)
        return count

    def write_pages(
        self,
        document_id: str,
        pages: Iterable[tuple[int, Any]],
        *,
        name: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Upsert `(page number, vectors or (vectors, patch layout))` pages of a document not yet
        complete, in one request (`wait=True`), as "ingesting" pages of this store's owner; return
        how many. Point ids are (document, page) hashes: writing a page again (a retried batch)
        overwrites it."""
        m = self._m
        points = []
        for number, page in pages:
            vectors, layout = split_page(page)
            arrays = page_vectors(number, vectors, self.schema)
            patches = layout_rows(layout, arrays[PAGE_VECTOR], self.schema)
            payload = page_payload(document_id, number, name, metadata, patches=patches) | {"owner": self.owner}
            named = {key: array.tolist() for key, array in arrays.items()}
            points.append(m.PointStruct(id=point_id(document_id, number), vector=named, payload=payload))
        if points:
            with self._calls():
                self.client.upsert(self.collection, points, wait=True)
        return len(points)

    def mark_complete(self, document_id: str, pages: int) -> None:
        """Make a document of `pages` pages searchable: delete its pages numbered above `pages` (an
        older, longer version), then flip all of them to "complete" in one update."""
        m = self._m
        document = self._filter(("document_id", document_id))
        stale = m.Filter(must=[document, m.FieldCondition(key="page", range=m.Range(gt=pages))])
        with self._calls():
            self.client.delete(self.collection, m.FilterSelector(filter=stale), wait=True)  # an older, longer version
            self.client.set_payload(self.collection, {"status": COMPLETE}, points=document, wait=True)

    def delete_document(self, document_id: str) -> int:
        """Remove a document's pages; return how many there were."""
        document = self._filter(("document_id", document_id))
        with self._calls():
            pages = self.client.count(self.collection, count_filter=document, exact=True).count
            self.client.delete(self.collection, self._m.FilterSelector(filter=document), wait=True)
        return pages

    def set_metadata(self, document_id: str, metadata: dict[str, Any]) -> int:
        """Replace the metadata of every page of a document (`wait=True`); return how many pages it has."""
        document = self._filter(("document_id", document_id))
        with self._calls():
            pages = self.client.count(self.collection, count_filter=document, exact=True).count
            if pages:
                self.client.set_payload(self.collection, {"metadata": metadata}, points=document, wait=True)
        return pages

    def stored_pages(self, document_id: str) -> int:
        """How many pages of `document_id` are stored, complete or not (written in page order)."""
        with self._calls():
            return self.client.count(self.collection, count_filter=self._filter(("document_id", document_id)),
                                     exact=True).count  # fmt: skip

    def purge_incomplete(self, keep: Iterable[str] = ()) -> int:
        """Delete the pages this owner's unfinished ingests left, but for documents in `keep` (ingests
        that will resume); return how many."""
        m = self._m
        incomplete = self._filter(("status", INGESTING), ("owner", self.owner))
        keep = list(keep)
        if keep:
            incomplete.must_not = [m.FieldCondition(key="document_id", match=m.MatchAny(any=keep))]
        with self._calls():
            pages = self.client.count(self.collection, count_filter=incomplete, exact=True).count
            if pages:
                self.client.delete(self.collection, self._m.FilterSelector(filter=incomplete), wait=True)
        return pages

    def discard_incomplete(self, document_id: str) -> int:
        """Delete the pages of `document_id` this owner left "ingesting" (a failed fan-out); return how
        many. Complete pages and other owners' ingests are left alone."""
        incomplete = self._filter(("document_id", document_id), ("status", INGESTING), ("owner", self.owner))
        with self._calls():
            pages = self.client.count(self.collection, count_filter=incomplete, exact=True).count
            if pages:
                self.client.delete(self.collection, self._m.FilterSelector(filter=incomplete), wait=True)
        return pages

    # ---------------------------------------------------------------- reads
    def page_count(self, document_id: str | None = None) -> int:
        """Pages of complete documents (of one document if given)."""
        matches = [("status", COMPLETE)] + ([("document_id", document_id)] if document_id is not None else [])
        with self._calls():
            return self.client.count(self.collection, count_filter=self._filter(*matches), exact=True).count

    def iter_pages(self, document_id: str) -> Iterator[tuple[int, np.ndarray]]:
        """A complete document's pages, retrieved with their vectors READ_BATCH at a time, in page order:
        `(page, (n_tokens, 128) or (dim,) float16)` (the server stores float16; local mode keeps the
        float16-rounded values it was sent)."""
        pages = self.page_count(document_id)
        for first in range(1, pages + 1, READ_BATCH):
            numbers = range(first, min(first + READ_BATCH, pages + 1))
            with self._calls():
                records = self.client.retrieve(self.collection, [point_id(document_id, n) for n in numbers],
                                               with_payload=["status"], with_vectors=[PAGE_VECTOR])  # fmt: skip
            yield from stored_pages(document_id, numbers, records)

    def read_page(self, document_id: str, number: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        """One complete page: `(vectors float16, patch layout or None)`."""
        with self._calls():
            records = self.client.retrieve(
                self.collection, [point_id(document_id, number)], with_payload=["status", PATCHES_KEY],
                with_vectors=[PAGE_VECTOR],
            )  # fmt: skip
        return stored_page(document_id, number, records)

    def page_layouts(self, document_id: str) -> dict[int, dict[str, Any]]:
        """page -> patch layout, for a document's pages that have one (payloads only, no vectors)."""
        layouts, offset, document = {}, None, self._filter(("document_id", document_id))
        while True:
            with self._calls():
                records, offset = self.client.scroll(
                    self.collection, scroll_filter=document, limit=256, offset=offset,
                    with_payload=["page", PATCHES_KEY], with_vectors=False,
                )  # fmt: skip
            layouts.update(
                {int(r.payload["page"]): r.payload[PATCHES_KEY] for r in records if r.payload.get(PATCHES_KEY)}
            )
            if offset is None:
                return layouts

    def has_metadata_field(self, key: str) -> bool:
        """Whether a complete page has metadata field `key` (pages stored by other pagelens servers too)."""
        m = self._m
        present = m.Filter(
            must=[self._filter(("status", COMPLETE))],
            must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=f"metadata.{key}"))],
        )
        with self._calls():
            points, _ = self.client.scroll(self.collection, scroll_filter=present, limit=1, with_payload=False)
        return bool(points)

    def search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = QDRANT_DEFAULT_PREFETCH,
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages against a query of the schema's shape: by MaxSim for `(q, 128)` multi-vectors,
        by the dot product for `(dim,)` single vectors. `exact` scores every page; `fast` prefetches
        `prefetch` candidates on the pooled vectors and the server reranks them exactly (multi-vector),
        or searches the HNSW graph with `hnsw_ef` = max(prefetch, k) (single-vector)."""
        m = self._m
        query = check_query(query, k, mode, prefetch, self.schema).tolist()
        condition = self._m.Filter(must=[self._condition(c) for c in search_conditions(filter)])
        if mode == "exact":
            request = {"query_filter": condition, "search_params": m.SearchParams(exact=True)}
        elif self.schema.multi_vector:
            candidates = m.Prefetch(query=query, using=POOLED_VECTOR, limit=max(prefetch, k), filter=condition,
                                    params=m.SearchParams(exact=True))  # fmt: skip
            request = {"prefetch": [candidates]}
        else:
            request = {"query_filter": condition, "search_params": m.SearchParams(hnsw_ef=max(prefetch, k))}
        with self._calls():
            response = self.client.query_points(
                self.collection, query=query, using=PAGE_VECTOR, limit=k, with_payload=True, **request
            )
        return [to_hit(point.payload or {}, point.score) for point in response.points]

    def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""
