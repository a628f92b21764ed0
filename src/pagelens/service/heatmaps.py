"""Similarity heatmaps: how much each patch of a stored page answers each token of a query, drawn
from the page's stored vectors and the patch layout recorded at its ingest (nothing re-embedded).

The maps are colpali-engine's (`get_similarity_maps_from_embeddings`; Idefics3/ModernVBert pages
through their processor's own method, which puts tiles in place): the dot product of each query
token's vector with each patch's stored vector, float32, not normalised. `heatmap` returns them
row-major, `maps[t][y][x]` for token t, patch row y (top to bottom) and column x (left to right),
an `h x w` grid (colpali-engine's `(n_x, n_y)` maps transposed), ready for a canvas: scale each
value to a pixel's alpha. Only the query's word pieces are kept: the augmentation tokens
(`<|endoftext|>` x 10 for Qwen) and the tokenizer's special tokens are dropped.

A page without a map is `NoSimilarityMap` (409) saying why: single-vector pages (one vector per
page), pages stored pooled (PAGELENS_POOL_FACTOR merges patch rows), a model whose processor gives no
patch grid, or a page stored before layouts were recorded (re-ingest it: delete and upload again).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pagelens.codecs.text import check_query
from pagelens.errors import BackendFailure, InvalidInput, NoSimilarityMap

if TYPE_CHECKING:
    from pagelens.index.collection import Collection
    from pagelens.service.collections import CollectionService
    from pagelens.service.embeddings import StageTimings

OVERLAY_OPACITY = 0.6  # a patch's colour at the map's highest value (0 at its lowest)
OVERLAY_COLOUR = np.array([255, 32, 0], dtype=np.float32)


class HeatmapService:
    """Similarity maps of stored pages, over the collection service (its binding checks, its pools)."""

    def __init__(self, collections: CollectionService) -> None:
        self.collections = collections

    async def heatmap(
        self, name: str, document_id: str, page: int, query: str, *, timings: StageTimings | None = None
    ) -> dict[str, Any]:
        """`{document_id, page, query, tokens, token_rows, grid, maps, combined, value_range, score}`:
        `tokens` the query's word pieces, `token_rows` each one's row in the query's embedding,
        `grid` `[h, w]`, `maps` one `h x w` list of lists per token (raw dot products, float32),
        `combined` their mean, `value_range` `[min, max]` over `maps`, `score` the page's MaxSim
        (every query row, as /search scores it). 400 for a bad query, 404 for an unknown collection,
        document or page, 409 when no map can be drawn (module docstring)."""
        backend, collection = await self._checked(name, query)
        vectors, layout = await self.collections._run(collection.stored_page, document_id, page)
        if layout is None:
            raise NoSimilarityMap(
                f"page {page} of document {document_id!r} was stored without its patch grid (ingested before "
                "heatmaps existed); re-ingest it to get heatmaps: delete the document and upload it again"
            )
        embeddings = self.collections._embeddings()
        (query_vectors,) = await embeddings.embed_queries([query], timings=timings)
        return await self.collections._run(
            self._maps, backend, document_id, page, query, vectors, query_vectors, layout
        )

    async def overlay_png(
        self, name: str, document_id: str, page: int, query: str, *, token: int | None = None
    ) -> bytes:
        """The page image (as GET .../pages/{n} serves it) with a map blended over it in red, PNG:
        the combined map, or token `token`'s (an index into `tokens`), scaled min..max to 0..60%
        opacity and stretched (bilinear) over the page."""
        result = await self.heatmap(name, document_id, page, query)
        if token is not None and not 0 <= token < len(result["tokens"]):
            raise InvalidInput(
                f"token must be between 0 and {len(result['tokens']) - 1} (the query's tokens), got {token}"
            )
        chosen = result["combined"] if token is None else result["maps"][token]
        collection = await self.collections._run(lambda: self.collections.index().get(name))
        return await self.collections._run(_overlay, collection, document_id, page, np.asarray(chosen, np.float32))

    async def _checked(self, name: str, query: str) -> tuple[Any, Collection]:
        """The model's embedder and the collection, once the query and the collection can give a map."""
        embeddings = self.collections._embeddings()
        check_query(query, max_chars=embeddings.engine.config.max_query_chars)
        collection = await self.collections._run(self.collections.bound, name, for_ingest=False)
        if not collection.schema.multi_vector:
            raise NoSimilarityMap(
                f"collection {name!r} holds single-vector pages ({collection.schema}): a page is one vector, "
                "with no patches to map"
            )
        pool_factor = collection.binding.pool_factor if collection.binding is not None else None
        if pool_factor is not None:
            raise NoSimilarityMap(
                f"collection {name!r} stores pages pooled (pool factor {pool_factor}): its rows are merged patches, "
                "with no place on the page; a collection filled without PAGELENS_POOL_FACTOR has heatmaps"
            )
        backend = embeddings.engine.backend
        if not getattr(backend, "gives_patch_maps", False):
            raise NoSimilarityMap(f"the model this server runs ({embeddings.info.model}) gives no similarity maps")
        return backend, collection

    @staticmethod
    def _maps(
        backend: Any, document_id: str, page: int, query: str, vectors: np.ndarray, query_vectors: np.ndarray,
        layout: dict[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        tokens = backend.query_tokens(query)
        if tokens and tokens[-1][0] >= len(query_vectors):
            raise BackendFailure(f"the query has {len(query_vectors)} rows; its tokens reach row {tokens[-1][0]}")
        if not tokens:
            raise InvalidInput("query has no word pieces to map (only special tokens)")
        maps = backend.similarity_maps(vectors, query_vectors, layout)  # (q, n_x, n_y)
        rows = [row for row, _ in tokens]
        kept = np.ascontiguousarray(maps[rows].transpose(0, 2, 1), dtype=np.float32)  # (t, h, w)
        combined = kept.mean(axis=0)
        score = float((query_vectors @ vectors.astype(np.float32).T).max(axis=1).sum())
        return {
            "document_id": document_id,
            "page": page,
            "query": query,
            "tokens": [text for _, text in tokens],
            "token_rows": rows,
            "grid": [int(kept.shape[1]), int(kept.shape[2])],
            "maps": kept.tolist(),
            "combined": combined.tolist(),
            "value_range": [float(kept.min()), float(kept.max())],
            "score": score,
        }


def _overlay(collection: Collection, document_id: str, page: int, heat: np.ndarray) -> bytes:
    """`heat` (h x w) blended over the page image (reduced as GET .../pages/{n} serves it), PNG."""
    from pagelens.codecs.images import PAGE_IMAGE_MAX_PIXELS, reduce_image

    image = reduce_image(collection.page_image(document_id, page), PAGE_IMAGE_MAX_PIXELS).convert("RGB")
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    alpha = Image.fromarray((scaled * 255).astype(np.uint8), "L").resize(image.size, Image.Resampling.BILINEAR)
    weight = np.asarray(alpha, dtype=np.float32)[..., None] / 255 * OVERLAY_OPACITY
    blended = np.asarray(image, dtype=np.float32) * (1 - weight) + OVERLAY_COLOUR * weight
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
