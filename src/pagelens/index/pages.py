"""What every page store shares, whatever engine holds the points: the point layout, input checks,
payloads and hits.

A page is one point: `page` holds its full multi-vector (`(n_tokens, 128)`, stored float16, scored
by exact MaxSim), `pooled` POOLED_ROWS cluster centroids of it (k-means on cosine) for the fast
mode's prefetch, and the payload `document_id`, `page` (1-based), `name`, `metadata`, `status`
("ingesting" until the document's last page is stored, then "complete"; search sees complete ones).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pagelens.errors import InvalidInput

PAGE_VECTOR, POOLED_VECTOR = "page", "pooled"
DIM = 128
POOLED_ROWS = 128  # ~6 page tokens per centroid at ColQwen's ~750: see docs/benchmarks.md, "Search"
LEGACY_POOLED_ROWS = 64  # what pages stored before 2026-12 have
INGESTING, COMPLETE = "ingesting", "complete"
MAX_K = 1000
MAX_PREFETCH = 10_000  # fast-mode candidates per search
SearchMode = Literal["exact", "fast"]


@dataclass(frozen=True)
class PageSchema:
    """What a store keeps per page: a multi-vector `(n_tokens, dim)` scored by MaxSim (Col* models;
    dim 128), or a single `(dim,)` vector scored by the dot product (Bi* models)."""

    dim: int = DIM
    multi_vector: bool = True


MULTI_VECTOR_128 = PageSchema()


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


def page_vectors(number: int, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Page `number`'s named vectors: `{page: (n, 128) float16, pooled: (POOLED_ROWS, 128) float16}`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != DIM or not len(vectors):
        raise InvalidInput(f"page {number} has shape {vectors.shape}; expected (n_tokens, {DIM})")
    return {PAGE_VECTOR: vectors.astype(np.float16), POOLED_VECTOR: cluster_pool(vectors).astype(np.float16)}


def page_payload(document_id: str, number: int, name: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The payload of a page being ingested (its document not complete yet)."""
    return {"document_id": document_id, "page": number, "name": name, "metadata": metadata or {}, "status": INGESTING}


def check_query(query: np.ndarray, k: int, mode: str, prefetch: int) -> np.ndarray:
    """Validate a search; return the query as `(q, 128)` float32."""
    query = np.asarray(query, dtype=np.float32)
    if query.ndim != 2 or query.shape[1] != DIM:
        raise InvalidInput(f"query embedding has shape {query.shape}; expected (n_tokens, {DIM})")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in ("exact", "fast"):
        raise InvalidInput(f"mode must be 'exact' or 'fast', got {mode!r}")
    if not 1 <= prefetch <= MAX_PREFETCH:
        raise InvalidInput(f"prefetch must be between 1 and {MAX_PREFETCH}, got {prefetch}")
    return query


def search_matches(filter: dict[str, Any] | None) -> list[tuple[str, str | int | bool]]:
    """The (payload key, value) pairs a searched page must match: complete, and each metadata filter."""
    matches: list[tuple[str, str | int | bool]] = [("status", COMPLETE)]
    for key, value in (filter or {}).items():
        if not isinstance(value, str | int | bool):
            raise InvalidInput(f"filter value for {key!r} must be a string, integer or boolean")
        matches.append((f"metadata.{key}", value))
    return matches


def to_hit(payload: dict[str, Any], score: float) -> SearchHit:
    """A search hit from a stored point's payload and its MaxSim score."""
    metadata = payload.get("metadata") or {}
    return SearchHit(payload["document_id"], int(payload["page"]), float(score), payload.get("name", ""), metadata)
