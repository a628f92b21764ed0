"""Request bodies of every route (pydantic models only; no serving logic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EmbedDtype = Literal["float32", "float16"]


class MorphikEmbeddingsRequest(BaseModel):
    """morphik-core's ColpaliApiEmbeddingModel (and seed 001): one input type per request."""

    input_type: Literal["image", "text"]
    inputs: list[str]


class Seed004EmbedRequest(BaseModel):
    """Seed 004's HF server `/embed`: base64 images and/or texts (queries)."""

    images: list[str] = Field(default_factory=list)
    texts: list[str] = Field(default_factory=list)
    normalize: bool = True


class OpenAIEmbeddingsRequest(BaseModel):
    """OpenAI-style `/v1/embeddings`: strings are queries, `data:image/...;base64,` URIs are images."""

    model_config = ConfigDict(extra="allow")

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    embed_dtype: EmbedDtype = "float32"


class ScoreRequest(BaseModel):
    """`/score`: one query against page images (base64 / data URI) or given page embeddings."""

    query: str
    images: list[str] | None = None
    embeddings: list[Any] | None = None  # each (n_tokens, dim) or (dim,); checked by the service


class CreateCollectionRequest(BaseModel):
    name: str


class SearchRequest(BaseModel):
    """`/collections/{c}/search`: `exact` scores every page with MaxSim; `fast` prefetches on pooled vectors
    the `prefetch` best candidate pages (at least `k`; unset: the store's default) and rescores them exactly."""

    query: str
    k: int = Field(default=10, ge=1, le=1000)
    mode: Literal["exact", "fast"] = "exact"
    prefetch: int | None = Field(default=None, ge=1, le=10_000)
    filter: dict[str, str | int | bool] | None = None
