"""The service layer: what every entry point (HTTP routes, CLI, Modal) calls.

    Runtime            settings -> model + engine + collections + generator, one lifecycle (runtime.py)
    EmbeddingService   base64 images and queries -> vectors, within the request limits (embeddings.py)
    CollectionService  collections bound to their model: ingest, search, documents (collections.py)
    HeatmapService     similarity maps of stored pages for a query (heatmaps.py)
    JobService         every upload as a durable ingest job: queue, progress, cancel, resume (jobs.py)
    AskService         questions over a collection's pages, answered by the generator (ask.py)
    document_pages     a document's page images without a collection (pages.py)
    open_chat          chat completions over the runtime's answer model, vLLM's model-name policy (chat.py)

Entry points import this package (and settings, errors, codecs), never `pagelens.index` or
`pagelens.engine` directly. Names load on first use, so `pagelens --help` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pagelens.service.ask import Asking, AskService
    from pagelens.service.chat import (
        DEFAULT_MAX_TOKENS,
        Finished,
        TextDelta,
        collect_answer,
        open_chat,
        unless_client_leaves,
    )
    from pagelens.service.collections import MAX_PREFETCH, CollectionService, SearchHit
    from pagelens.service.embeddings import EmbeddingService, OutputDtype, StageTimings
    from pagelens.service.heatmaps import HeatmapService
    from pagelens.service.jobs import (
        JobService,
        jobs_running_elsewhere,
        raise_job_error,
        resumable_documents,
        stored_job,
        stored_jobs,
    )
    from pagelens.service.pages import document_pages
    from pagelens.service.runtime import Runtime, fetch_model, load, load_embedder

_WHERE = {
    "AskService": "ask",
    "Asking": "ask",
    "check_answer_settings": "ask",
    "DEFAULT_MAX_TOKENS": "chat",
    "Finished": "chat",
    "TextDelta": "chat",
    "collect_answer": "chat",
    "unless_client_leaves": "chat",
    "open_chat": "chat",
    "MAX_PREFETCH": "collections",
    "CollectionService": "collections",
    "SearchHit": "collections",
    "EmbeddingService": "embeddings",
    "OutputDtype": "embeddings",
    "StageTimings": "embeddings",
    "HeatmapService": "heatmaps",
    "JobService": "jobs",
    "raise_job_error": "jobs",
    "jobs_running_elsewhere": "jobs",
    "resumable_documents": "jobs",
    "stored_job": "jobs",
    "stored_jobs": "jobs",
    "document_pages": "pages",
    "Runtime": "runtime",
    "fetch_model": "runtime",
    "load": "runtime",
    "load_embedder": "runtime",
}
__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_PREFETCH",
    "AskService",
    "Asking",
    "CollectionService",
    "EmbeddingService",
    "Finished",
    "HeatmapService",
    "JobService",
    "OutputDtype",
    "Runtime",
    "SearchHit",
    "StageTimings",
    "TextDelta",
    "check_answer_settings",
    "collect_answer",
    "document_pages",
    "fetch_model",
    "jobs_running_elsewhere",
    "load",
    "load_embedder",
    "open_chat",
    "raise_job_error",
    "resumable_documents",
    "stored_job",
    "stored_jobs",
    "unless_client_leaves",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pagelens.service' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pagelens.service.{_WHERE[name]}"), name)
