"""Request and response bodies of every route (pydantic models only; no serving logic).

The response models declare the bodies in the OpenAPI document; the routes build their bodies
themselves (big embedding arrays would be slow through pydantic), and the tests check that the
bodies validate against these models.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

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


FilterScalar = str | int | bool
RangeBound = float | date | datetime


class FilterOperators(BaseModel):
    """Operators on one metadata field, ANDed: `$in` any of a non-empty list of values of one type;
    `$gt`, `$gte`, `$lt`, `$lte` bounds that are all numbers, or all ISO 8601 dates or datetimes
    (UTC when they name no offset; a date is its midnight UTC). Values match by type: a numeric range
    skips strings, a date range skips anything that is no ISO 8601 string."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    in_: list[FilterScalar] = Field(default=None, alias="$in", min_length=1, max_length=1024, title="$in")
    gt: RangeBound = Field(default=None, alias="$gt", title="$gt")
    gte: RangeBound = Field(default=None, alias="$gte", title="$gte")
    lt: RangeBound = Field(default=None, alias="$lt", title="$lt")
    lte: RangeBound = Field(default=None, alias="$lte", title="$lte")


class SearchRequest(BaseModel):
    """`/collections/{c}/search`: `exact` scores every page with MaxSim; `fast` prefetches on pooled vectors
    the `prefetch` best candidate pages (at least `k`; unset: the collection's default, which adapts to keep the
    measured recall at PAGELENS_TARGET_RECALL: `fast_search` in its info) and rescores them exactly."""

    query: str
    k: int = Field(default=10, ge=1, le=1000)
    mode: Literal["exact", "fast"] = "exact"
    prefetch: int | None = Field(default=None, ge=1, le=10_000)
    filter: SkipValidation[dict[str, FilterScalar | FilterOperators] | None] = Field(
        default=None,
        description="Metadata field -> a value (equality; a list field matches when one item does) or an object "
        "of operators; several fields are ANDed. Checked by the server, a 400 naming the field and operator "
        'at fault. E.g. {"team": "finance", "year": {"$gte": 2020}, "date": {"$lt": "2024-07-01"}}',
    )


class HeatmapRequest(BaseModel):
    """`/collections/{c}/documents/{id}/pages/{n}/heatmap`: the query whose similarity maps to draw."""

    query: str = Field(description="A query text, as /search takes it (non-blank, at most PAGELENS_MAX_QUERY_CHARS)")


# ---------------------------------------------------------------- responses

Vectors = list[list[float]] | list[float]
"""One input's embedding: `(n_tokens, dim)` rows (multi-vector models) or one `(dim,)` vector (Bi* models)."""


class ErrorDetail(BaseModel):
    type: str = Field(description="The error's type in the one table, e.g. invalid_input, payload_too_large")
    message: str
    index: int | None = Field(default=None, description="Position of the input to blame in its list, if one is")


class ErrorResponse(BaseModel):
    """Every error response: 4xx and 5xx alike."""

    error: ErrorDetail


class MorphikEmbeddingsJSON(BaseModel):
    """`/embeddings` with `Accept: application/json` (seed 001's shape)."""

    embeddings: list[Vectors]


class Seed004EmbedResponse(BaseModel):
    embeddings: list[Vectors] = Field(description="Images first, then texts, each in input order")
    dimension: int
    multi_vector: bool
    image_count: int
    text_count: int
    shapes: list[list[int]]
    normalized: bool
    model: str


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Vectors | str = Field(description="Nested lists; with encoding_format base64, the raw buffer in base64")
    shape: list[int]
    dtype: str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class ScoreItem(BaseModel):
    object: Literal["score"]
    index: int
    score: float


class ScoreResponse(BaseModel):
    object: Literal["list"]
    model: str
    method: Literal["maxsim", "dot"]
    scores: list[float] = Field(description="One per page, in input order")
    data: list[ScoreItem]


class ModelBindingInfo(BaseModel):
    """The model a collection was filled by."""

    model: str
    revision: str | None
    family: str
    multi_vector: bool
    dim: int
    pool_factor: int | None = None


class FastSearchInfo(BaseModel):
    """The fast mode's default prefetch and its measured recall: a sampled share of fast searches
    (PAGELENS_RECALL_SAMPLE) is re-run exactly in the background, and the default prefetch adapts,
    within `prefetch_bounds`, to keep the recall at PAGELENS_TARGET_RECALL."""

    prefetch: int = Field(description="Candidates a fast search without `prefetch` rescores (adapted, kept on restart)")
    prefetch_bounds: list[int] = Field(description="[lowest, highest] the adapted prefetch may be")
    target_recall: float
    recall: float | None = Field(description="Mean recall@k of the last `samples` sampled fast searches vs exact")
    samples: int = Field(description="How many sampled fast searches `recall` is over (at most 200)")
    recall_at_prefetch: float | None = Field(
        description="Of those, the ones at the current default prefetch, since it was last set"
    )
    samples_at_prefetch: int
    sample_rate: float = Field(description="The share of fast searches re-run exactly (PAGELENS_RECALL_SAMPLE)")


class CollectionInfo(BaseModel):
    name: str
    documents: int
    pages: int
    model: ModelBindingInfo | None = Field(description="None: no model has filled or searched it yet")
    compatible: bool = Field(description="Whether the model this server runs can search and fill it")
    mismatch: str | None = Field(description="Why not, when it cannot")
    fast_search: FastSearchInfo | None = Field(
        default=None, description="None where the fast mode is exact (single-vector pages on Qdrant Edge)"
    )


class UnreadableCollection(BaseModel):
    """A listed collection that could not be opened."""

    name: str
    error: ErrorDetail


class CollectionList(BaseModel):
    collections: list[CollectionInfo | UnreadableCollection]


class Deleted(BaseModel):
    deleted: str


class DocumentAdded(BaseModel):
    id: str
    pages: int
    created: bool = Field(description="False when the same bytes were stored before (nothing new stored)")
    metadata_kept: bool = Field(
        description="True when the same bytes were stored before: their stored metadata was kept and this "
        "upload's was not applied (PATCH the document to change it)"
    )


JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class JobError(BaseModel):
    type: str
    message: str


class JobInfo(BaseModel):
    """An ingest job (`GET /jobs/{id}`): one upload rendered, embedded and stored in the background."""

    id: str
    collection: str
    filename: str
    state: JobState
    pages_done: int
    pages_total: int | None
    document_id: str = Field(description="The document the upload becomes (the first 32 hex digits of its SHA-256)")
    created: bool | None = Field(description="Once done: false when the same bytes were stored before")
    error: JobError | None
    created_at: str
    finished_at: str | None


class JobAccepted(JobInfo):
    """`wait=false`: the job is queued (202); follow it at `GET /jobs/{job_id}` or `/jobs/{job_id}/events`."""

    job_id: str


class JobList(BaseModel):
    jobs: list[JobInfo]


class DocumentInfo(BaseModel):
    id: str
    name: str = Field(description="The uploaded file's name")
    pages: int
    bytes: int | None = Field(default=None, description="The file's size (null in a list, for documents "
                              "stored before sizes were recorded, until the document is read once)")  # fmt: skip
    sha256: str | None = Field(default=None, description="The file's full SHA-256, hex (null as bytes is)")
    metadata: dict[str, Any]
    created_at: str | None = Field(default=None, description="When it was stored, ISO 8601 UTC (null: before "
                                   "this was recorded)")  # fmt: skip
    kind: str | None = Field(default=None, description="pdf or image")
    dpi: int | None = None


class PatchDocumentRequest(BaseModel):
    """`PATCH /collections/{c}/documents/{id}`: changes merged into the stored metadata as a JSON merge
    patch (RFC 7396): objects merge key by key, `null` deletes a key, any other value replaces."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any]


class DocumentList(BaseModel):
    documents: list[DocumentInfo]


class SearchResult(BaseModel):
    document_id: str
    page: int = Field(description="1-based page number")
    score: float
    name: str
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="Best first")


class HeatmapResponse(BaseModel):
    """colpali-engine's similarity maps of a stored page for a query: one map per query token, each
    `h x w` row-major (`maps[t][y][x]`, y top to bottom, x left to right over the page's patch
    grid), raw dot products (not normalised; `value_range` gives their span)."""

    document_id: str
    page: int
    query: str
    tokens: list[str] = Field(description="The query's word pieces as the model's tokenizer splits them "
                              "(augmentation and special tokens dropped)")  # fmt: skip
    token_rows: list[int] = Field(description="Each token's row in the query's embedding")
    grid: list[int] = Field(description="[h, w]: patch rows down the page and patch columns across it")
    maps: list[list[list[float]]] = Field(description="Per token, h lists of w dot products")
    combined: list[list[float]] = Field(description="The mean of the token maps, h x w")
    value_range: list[float] = Field(description="[min, max] over every token map")
    score: float = Field(description="The page's MaxSim score for the query, as /search gives it")


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    queue_depth: int


class HealthUnavailable(BaseModel):
    status: Literal["unavailable"]
    model_loaded: bool


class ModelInfo(BaseModel):
    model: str
    family: str
    dim: int
    multi_vector: bool
    device: str
    dtype: str
    attention: str
    pool_factor: int | None = None
    quantize: str | None = None
    compiled: bool | None = None
    revision: str | None = None


class ServerInfo(BaseModel):
    name: str
    version: str
    ready: bool
    model: ModelInfo | None = Field(description="None while the model loads")
    routes: list[str]


# ---------------------------------------------------------------- answers


class AskRequest(BaseModel):
    """`/collections/{c}/ask`: the `k` pages `/search` finds for the question (same `mode`, `prefetch`,
    `filter`) go to the answer model, which answers citing them as [1]..[k]."""

    question: str = Field(description="Non-blank, at most PAGELENS_MAX_QUERY_CHARS characters")
    k: int = Field(default=3, ge=1, le=20, description="Pages retrieved and shown to the answer model")
    mode: Literal["exact", "fast"] = "exact"
    prefetch: int | None = Field(default=None, ge=1, le=10_000)
    filter: SkipValidation[dict[str, FilterScalar | FilterOperators] | None] = Field(
        default=None, description="As /search's: metadata field -> value or operators"
    )
    max_tokens: int = Field(default=512, ge=1, le=8192, description="At most this many tokens of answer")
    stream: bool = Field(default=False, description="Server-sent events: sources, token..., then done or error")


class AskSource(BaseModel):
    document_id: str
    page: int = Field(description="1-based page number; [n] in the answer cites the n-th source")
    score: float
    name: str
    metadata: dict[str, Any]


class AskUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class AskTimings(BaseModel):
    """Milliseconds per stage; a cached answer spends only `total_ms`."""

    embed_ms: float
    search_ms: float
    images_ms: float = Field(description="Reading the pages: rendering and JPEG encoding, or their text layers")
    ttft_ms: float = Field(description="From the generator's start to the first piece of the answer")
    generate_ms: float
    total_ms: float


class AskResponse(BaseModel):
    answer: str
    sources: list[AskSource] = Field(description="The pages shown to the answer model, best first")
    model: str
    usage: AskUsage
    timings: AskTimings
    cached: bool = Field(description="True when an identical ask of the unchanged collection was answered before")
    finish_reason: str = Field(description="stop, or length when max_tokens cut the answer")
