"""The service layer: what every entry point (HTTP routes, CLI, Modal) calls.

    Runtime            settings -> model + engine + collections, one lifecycle (runtime.py)
    EmbeddingService   base64 images and queries -> vectors, within the request limits (embeddings.py)
    CollectionService  collections bound to their model: ingest, search, documents (collections.py)

Entry points import this package (and settings, errors, codecs), never `pagelens.index` or
`pagelens.engine` directly.
"""

from pagelens.service.collections import MAX_PREFETCH, CollectionService, SearchHit
from pagelens.service.embeddings import EmbeddingService, OutputDtype, StageTimings
from pagelens.service.runtime import Runtime, fetch_model, load, load_embedder

__all__ = [
    "MAX_PREFETCH",
    "CollectionService",
    "EmbeddingService",
    "OutputDtype",
    "Runtime",
    "SearchHit",
    "StageTimings",
    "fetch_model",
    "load",
    "load_embedder",
]
