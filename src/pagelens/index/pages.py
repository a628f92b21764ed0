"""What every page store shares, whatever engine holds the points: the `PageStore` protocol, the
page schema and point layout, input checks, payloads and hits.

A page is one point. What it holds depends on the store's `PageSchema`, fixed when the store is
created and read back from what is stored when it is opened:

- multi-vector (Col* models, MULTI_VECTOR_128, the default): `page` is the page's full
  multi-vector (`(n_tokens, 128)`, stored float16, scored by exact MaxSim), `pooled` POOLED_ROWS
  cluster centroids of it (k-means on cosine) for the fast mode's prefetch (a Qdrant server's
  point holds both; an embedded store keeps them in its vector files, index/edge_store.py);
- single-vector (Bi* models, `PageSchema(dim, multi_vector=False)`): `page` holds one `(dim,)`
  vector (stored float16), scored by the dot product with a `(dim,)` query.

Either way the payload is `document_id`, `page` (1-based), `name`, `metadata`, `status`
("ingesting" until the document's last page is stored, then "complete"; search sees complete ones),
and for a multi-vector page whose model gave one, `patches`: its patch layout (index/patches.py),
what a similarity map needs.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from pagelens.codecs.metadata import Condition, check_filter
from pagelens.errors import Conflict, InvalidInput, NotFound
from pagelens.index.patches import PATCHES_KEY, check_layout

PAGE_VECTOR, POOLED_VECTOR = "page", "pooled"
DIM = 128
POOLED_ROWS = 128  # ~6 page tokens per centroid at ColQwen's ~750: see docs/benchmarks.md, "Search"
LEGACY_POOLED_ROWS = 64  # what pages stored before 2026-12 have
INGESTING, COMPLETE = "ingesting", "complete"
MAX_K = 1000
MAX_PREFETCH = 10_000  # fast-mode candidates per search
READ_BATCH = 8  # pages retrieved at once when a document's vectors are read back (~3 MB of Python floats a page)
SearchMode = Literal["exact", "fast"]
PagePatches = tuple[dict[str, Any], int] | None  # (a page's patch layout, its row count)


@dataclass(frozen=True)
class PageSchema:
    """What a store keeps per page: a multi-vector `(n_tokens, dim)` scored by MaxSim (Col* models),
    or a single `(dim,)` vector scored by the dot product (Bi* models). Stores hold multi-vectors of
    dim 128 only (MULTI_VECTOR_128; `resolve_schema` refuses others), single vectors of any dim.
    `str()` names it with its shape, for messages."""

    dim: int = DIM
    multi_vector: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, numbers.Integral) or self.dim < 1:
            raise InvalidInput(f"a page schema's dim must be a positive integer, got {self.dim!r}")
        object.__setattr__(self, "dim", int(self.dim))  # a NumPy integer from a model's config compares equal
        object.__setattr__(self, "multi_vector", bool(self.multi_vector))

    @property
    def shape(self) -> str:
        """A page's (and a query's) shape, as messages write it: `(n_tokens, 128)` or `(dim,)`."""
        return f"(n_tokens, {self.dim})" if self.multi_vector else f"({self.dim},)"

    @property
    def kind(self) -> str:
        return "multi-vector" if self.multi_vector else "single-vector"

    def __str__(self) -> str:
        return f"{self.kind} {self.shape}"


MULTI_VECTOR_128 = PageSchema()


def resolve_schema(store: str, stored: PageSchema | None, given: PageSchema | None) -> PageSchema:
    """The schema a store opens with: what it stores, else `given` (for a new store), else
    MULTI_VECTOR_128. `Conflict` naming `store` and both schemas when `given` contradicts what is
    stored; InvalidInput for a new store of multi-vectors other than 128-wide (the Edge store's
    mirror and centroids are 128-wide; the server store keeps the same layout)."""
    if stored is not None and given is not None and stored != given:
        raise Conflict(f"{store} holds {stored} pages; it cannot be opened for {given} pages")
    if stored is None and given is not None and given.multi_vector and given.dim != DIM:
        raise InvalidInput(f"{store} cannot be created for {given} pages: multi-vector pages are stored {DIM}-wide")
    return stored or given or MULTI_VECTOR_128


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


def cluster_pool(vectors: np.ndarray, clusters: int = POOLED_ROWS, iterations: int = 6) -> np.ndarray:
    """`clusters` k-means centroids of `(n, d)` unit vectors under cosine, L2-normalized: `(clusters, d)` float32.

    Deterministic: seeded farthest-first (from row 0, each next seed is the row least similar to
    the seeds so far), so rare tokens get centroids of their own, which is what a MaxSim prefetch
    needs (3000 synthetic pages: recall@10 at 100 candidates 0.98, against 0.905 with evenly spaced seeds).
    Pages with fewer rows than `clusters` return their rows, repeated to `clusters` rows (a repeat
    changes no MaxSim), so every page has the same row count.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    count = len(vectors)
    if count <= clusters:
        return vectors[np.arange(clusters) % count].copy()
    seeds, nearest = [0], vectors @ vectors[0]
    for _ in range(clusters - 1):
        seeds.append(int(nearest.argmin()))
        nearest = np.maximum(nearest, vectors @ vectors[seeds[-1]])
    centroids = vectors[seeds].copy()
    members = np.zeros((count, clusters), dtype=np.float32)
    for _ in range(iterations):
        members[:] = 0
        members[np.arange(count), (vectors @ centroids.T).argmax(axis=1)] = 1
        sums = members.T @ vectors
        used = members.any(axis=0)  # an empty cluster keeps its centroid
        centroids[used] = sums[used]
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


def _has_shape(array: np.ndarray, schema: PageSchema) -> bool:
    if schema.multi_vector:
        return array.ndim == 2 and array.shape[1] == schema.dim and len(array) > 0
    return array.shape == (schema.dim,)


def page_vectors(number: int, vectors: np.ndarray, schema: PageSchema = MULTI_VECTOR_128) -> dict[str, np.ndarray]:
    """Page `number`'s named vectors: multi-vector `{page: (n, 128) float16, pooled: (POOLED_ROWS,
    128) float16}`, single-vector `{page: (dim,) float16}`. InvalidInput naming the expected shape."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if not _has_shape(vectors, schema):
        raise InvalidInput(f"page {number} has shape {vectors.shape}; expected {schema.shape} ({schema.kind} pages)")
    if not schema.multi_vector:
        return {PAGE_VECTOR: vectors.astype(np.float16)}
    return {PAGE_VECTOR: vectors.astype(np.float16), POOLED_VECTOR: cluster_pool(vectors).astype(np.float16)}


def page_payload(
    document_id: str, number: int, name: str, metadata: dict[str, Any] | None, *, patches: PagePatches = None
) -> dict[str, Any]:
    """The payload of a page being ingested (its document not complete yet). `patches`: `(layout,
    the page's row count)` when it has a patch layout, checked to fit (index/patches.py)."""
    payload = {
        "document_id": document_id,
        "page": number,
        "name": name,
        "metadata": metadata or {},
        "status": INGESTING,
    }
    if patches is not None and patches[0] is not None:
        try:
            payload[PATCHES_KEY] = check_layout(*patches)
        except InvalidInput as error:
            raise InvalidInput(f"page {number}: {error}") from None
    return payload


def layout_rows(layout: dict[str, Any] | None, vectors: np.ndarray, schema: PageSchema) -> PagePatches:
    """`page_payload`'s `patches` for a page of `vectors`: None without a layout; InvalidInput for a
    layout on a single-vector page (it has no rows to lay out)."""
    if layout is None:
        return None
    if not schema.multi_vector:
        raise InvalidInput("a single-vector page has no patch layout")
    return layout, len(vectors)


def vectors_in_point(record: Any) -> np.ndarray:
    """A retrieved point's `page` vector(s) as float16 (stored as float16: nothing is rounded)."""
    return np.asarray(record.vector[PAGE_VECTOR], dtype=np.float32).astype(np.float16)


def stored_pages(
    document_id: str, numbers: range, records: Iterable[Any], vectors_of: Callable[[Any], np.ndarray] = vectors_in_point
) -> list[tuple[int, np.ndarray]]:
    """Pages `numbers` of `document_id` from retrieved points (Qdrant Edge's or qdrant-client's records:
    `.id`, `.payload` with `status`) as `(page, float16 array)`, each array `vectors_of(record)` (by
    default the point's own `page` vector); `NotFound` naming a page that is missing or not complete."""
    by_id = {record.id: record for record in records}
    pages = []
    for number in numbers:
        record = by_id.get(point_id(document_id, number))
        if record is None or (record.payload or {}).get("status") != COMPLETE:
            raise NotFound(f"page {number} of document {document_id!r} is no longer stored")
        pages.append((number, vectors_of(record)))
    return pages


def stored_page(
    document_id: str, number: int, records: Iterable[Any], vectors_of: Callable[[Any], np.ndarray] = vectors_in_point
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Page `number` of `document_id` from its retrieved point: `(vectors float16, patch layout or
    None)`; `NotFound` when it is missing or not complete."""
    records = list(records)
    ((_, vectors),) = stored_pages(document_id, range(number, number + 1), records, vectors_of)
    (record,) = (record for record in records if record.id == point_id(document_id, number))
    return vectors, (record.payload or {}).get(PATCHES_KEY)


def check_query(
    query: np.ndarray, k: int, mode: str, prefetch: int, schema: PageSchema = MULTI_VECTOR_128
) -> np.ndarray:
    """Validate a search; return the query as float32, `(q, 128)` for multi-vector pages, `(dim,)`
    for single-vector ones."""
    query = np.asarray(query, dtype=np.float32)
    if not _has_shape(query, schema):
        raise InvalidInput(f"query embedding has shape {query.shape}; expected {schema.shape} ({schema.kind} pages)")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in ("exact", "fast"):
        raise InvalidInput(f"mode must be 'exact' or 'fast', got {mode!r}")
    if not 1 <= prefetch <= MAX_PREFETCH:
        raise InvalidInput(f"prefetch must be between 1 and {MAX_PREFETCH}, got {prefetch}")
    return query


def search_conditions(filter: dict[str, Any] | None) -> list[Condition]:
    """The payload conditions a searched page must meet: complete, and each of the metadata filter's
    (codecs/metadata.py `check_filter`), its keys as payload paths (`metadata.<key>`)."""
    conditions = [Condition("status", (COMPLETE,))]
    conditions.extend(replace(condition, key=f"metadata.{condition.key}") for condition in check_filter(filter))
    return conditions


def to_hit(payload: dict[str, Any], score: float) -> SearchHit:
    """A search hit from a stored point's payload and its MaxSim score."""
    metadata = payload.get("metadata") or {}
    return SearchHit(payload["document_id"], int(payload["page"]), float(score), payload.get("name", ""), metadata)


@runtime_checkable
class PageStore(Protocol):
    """What a collection needs of the store holding its pages (Qdrant Edge: index/edge_store.py;
    a Qdrant server: index/qdrant_store.py).

    `schema` is what each page is (fixed at creation, read back on open); `default_prefetch` how
    many candidates the fast mode rescores when a search names none; `recovered` says what opening
    the store had to give up (None when nothing). Pages are `(n_tokens, 128)`
    or `(dim,)` float arrays as the schema says, queries likewise; scores are float32 MaxSims or
    dot products. A document is all or nothing: its pages are searchable once the last is stored.
    """

    schema: PageSchema
    default_prefetch: int
    recovered: str | None

    def add_document(
        self,
        document_id: str,
        pages: Iterable[np.ndarray],
        *,
        name: str = "",
        metadata: dict[str, Any] | None = None,
        first_page: int = 1,
    ) -> int:
        """Store a document's pages (in page order from `first_page`; may be a generator) atomically,
        replacing an earlier version; return the page count. A page is its vectors or `(vectors,
        patch layout or None)` (index/patches.py). Pages before `first_page` are those an
        interrupted ingest of the document stored (`stored_pages`)."""
        ...

    def stored_pages(self, document_id: str) -> int:
        """Pages of `document_id` stored, complete or not (pages 1..n: ingests write in order)."""
        ...

    def delete_document(self, document_id: str) -> int:
        """Remove a document's pages; return how many there were."""
        ...

    def set_metadata(self, document_id: str, metadata: dict[str, Any]) -> int:
        """Replace the metadata in every page of a document (durably, before returning); return how
        many pages it has. The collection holds the document's lock: no ingest of it runs meanwhile."""
        ...

    def purge_incomplete(self, keep: Iterable[str] = ()) -> int:
        """Delete the pages of ingests that never completed, but of the documents in `keep` (to be
        resumed); return how many."""
        ...

    def page_count(self, document_id: str | None = None) -> int:
        """Pages of complete documents (of one document if given)."""
        ...

    def iter_pages(self, document_id: str) -> Iterator[tuple[int, np.ndarray]]:
        """A complete document's pages as stored, in page order: `(page, vectors)`, `(n_tokens, 128)`
        or `(dim,)` float16 (a snapshot's export). Nothing for a document with no complete page;
        `NotFound` when a page goes missing while it is read (the caller holds the document's lock)."""
        ...

    def read_page(self, document_id: str, number: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        """One complete page: `(vectors float16, its patch layout or None)` (a similarity map's input).
        `NotFound` when it is not stored or its document is not complete."""
        ...

    def page_layouts(self, document_id: str) -> dict[int, dict[str, Any]]:
        """page -> patch layout of a document's pages that have one (a snapshot's export)."""
        ...

    def search(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        mode: SearchMode = "exact",
        prefetch: int = ...,  # the store's default_prefetch
        filter: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Top-k pages of complete documents matching `filter` (codecs/metadata.py `check_filter`), best first."""
        ...

    def close(self) -> None: ...
