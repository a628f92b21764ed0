"""Helpers shared by the routers: the service dependency and per-request timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from pagelens.errors import ModelNotReady
from pagelens.serving import EmbeddingService, StageTimings


def get_service(request: Request) -> EmbeddingService:
    service = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        raise ModelNotReady("the model is not loaded or the engine has stopped")
    return service


Service = Annotated[EmbeddingService, Depends(get_service)]


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
