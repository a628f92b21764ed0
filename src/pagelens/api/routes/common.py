"""Helpers shared by the routers: the runtime's services as dependencies, per-request timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from pagelens.service import AskService, CollectionService, EmbeddingService, JobService, Runtime, StageTimings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_service(request: Request) -> EmbeddingService:
    """The embedding service; `ModelNotReady` (503) while the model loads or after the engine stopped."""
    return get_runtime(request).ready_embeddings()


def get_collections(request: Request) -> CollectionService:
    return get_runtime(request).collections


def get_jobs(request: Request) -> JobService:
    return get_runtime(request).jobs


def get_asks(request: Request) -> AskService:
    return get_runtime(request).asks


Service = Annotated[EmbeddingService, Depends(get_service)]
Jobs = Annotated[JobService, Depends(get_jobs)]
CollectionsService = Annotated[CollectionService, Depends(get_collections)]
Asks = Annotated[AskService, Depends(get_asks)]


def request_timings(request: Request) -> StageTimings:
    """This request's stage timings (read by the access log)."""
    timings = StageTimings()
    request.state.timings = timings
    return timings


@contextmanager
def timing_encode(timings: StageTimings) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings.encode += time.perf_counter() - started
