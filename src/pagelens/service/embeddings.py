"""The embedding service behind the embedding routes, free of any web framework.

The routes parse their wire format into plain lists, call an `EmbeddingService` method, and encode
what it returns. The service owns the per-request limits, the decoding of base64 payloads (with
the input index in every error), the engine call and the stage timings.

Memory: base64 is decoded to bytes in a worker thread, and only image headers are read there;
the engine decodes pixels later, one image at a time (pagelens.engine.batcher). A route that owns
its list of base64 strings passes `release_inputs=True`, so each string is dropped once decoded
and a large request never holds its base64 text and its bytes at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pagelens.codecs.payloads import decode_base64_image
from pagelens.engine import Engine, item_timing
from pagelens.errors import InvalidInput, ModelNotReady, PayloadTooLarge
from pagelens.index.scoring import maxsim
from pagelens.models.embedder import EmbedderInfo

OutputDtype = Literal["float32", "float16"]


@dataclass
class StageTimings:
    """Seconds spent per stage of one request (logged and exposed as a Server-Timing header)."""

    decode: float = 0.0
    queue: float = 0.0
    forward: float = 0.0
    encode: float = 0.0
    items: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"decode": self.decode, "queue": self.queue, "forward": self.forward, "encode": self.encode}


class EmbeddingService:
    """Embeds base64 images and query texts for the routes, within the request limits."""

    def __init__(self, engine: Engine, info: EmbedderInfo, *, max_inputs_per_request: int) -> None:
        self.engine = engine
        self.info = info
        self.max_inputs_per_request = max_inputs_per_request

    @property
    def ready(self) -> bool:
        return self.engine.alive

    def check_input_count(self, count: int) -> None:
        """Refuse a request of `count` inputs over the limit (413), whatever their types; 503 if not ready."""
        if not self.ready:
            raise ModelNotReady("the embedding engine is not running")
        if count > self.max_inputs_per_request:
            raise PayloadTooLarge(
                f"{count} inputs in one request, over the limit of {self.max_inputs_per_request}; split the batch"
            )

    async def embed_images(
        self,
        values: Sequence[object],
        *,
        dtype: OutputDtype = "float32",
        timings: StageTimings | None = None,
        release_inputs: bool = False,
    ) -> list[np.ndarray]:
        """Decode base64/data-URI images (errors name the index) and embed them, in order.

        With `release_inputs`, `values` must be a list the caller gives up: each item is replaced
        by None once decoded (the caller keeps no other reference to the strings)."""
        timings = timings if timings is not None else StageTimings()
        self.check_input_count(len(values))
        started = time.perf_counter()

        def decode_and_submit():
            payloads = []
            for index in range(len(values)):  # no loop variable keeps the last string alive
                payloads.append(decode_base64_image(values[index], index=index))
                if release_inputs:
                    values[index] = None  # type: ignore[index]
            return self.engine.submit_images(payloads)  # headers only: pixels are decoded by the engine

        futures = await asyncio.to_thread(decode_and_submit)
        timings.decode += time.perf_counter() - started  # base64 decoding + header checks
        return await self._gather(futures, dtype, timings)

    async def embed_queries(
        self, values: Sequence[object], *, dtype: OutputDtype = "float32", timings: StageTimings | None = None
    ) -> list[np.ndarray]:
        """Embed query texts (errors name the index), in order."""
        timings = timings if timings is not None else StageTimings()
        self.check_input_count(len(values))
        futures = self.engine.submit_queries(values)  # type: ignore[arg-type]
        return await self._gather(futures, dtype, timings)

    async def _gather(self, futures: list, dtype: OutputDtype, timings: StageTimings) -> list[np.ndarray]:
        results = await Engine.gather(futures, dtype=dtype)
        for future in futures:
            timing = item_timing(future)
            if timing is not None:
                timings.queue = max(timings.queue, timing.waited)
                timings.forward = max(timings.forward, timing.forward)
        timings.items += len(results)
        return results

    async def score(
        self,
        query: str,
        *,
        images: Sequence[object] | None = None,
        embeddings: Sequence[object] | None = None,
        timings: StageTimings | None = None,
    ) -> list[float]:
        """Late-interaction scores of `query` against page images or given page embeddings, in order.

        Multi-vector models score with MaxSim; single-vector models with the dot product. A score
        that is not finite (values so large that float32 overflows) is an `InvalidInput` naming the page.
        """
        if (images is None) == (embeddings is None):
            raise InvalidInput("give exactly one of 'images' or 'embeddings' to score against")
        if embeddings is not None:
            self.check_input_count(len(embeddings))
        (query_vectors,) = await self.embed_queries([query], timings=timings)
        if images is not None:
            pages = await self.embed_images(images, timings=timings)
        else:
            given = embeddings or []
            pages = await asyncio.to_thread(lambda: [self._as_page_embedding(v, i) for i, v in enumerate(given)])
        # off the event loop: converting 60 MB of nested lists and scoring them takes seconds
        return await asyncio.to_thread(self._scores, query_vectors, pages)

    def _scores(self, query_vectors: np.ndarray, pages: list[np.ndarray]) -> list[float]:
        if self.info.multi_vector:
            scores = [maxsim(query_vectors, page) for page in pages]
        else:
            scores = [float(np.dot(query_vectors, page)) for page in pages]
        for index, value in enumerate(scores):
            if not math.isfinite(value):
                raise InvalidInput(f"its score is {value}: its values are too large to score in float32", index=index)
        return scores

    def _as_page_embedding(self, value: object, index: int) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInput("embedding is not a numeric array", index=index) from None
        expected = "(n_tokens, dim)" if self.info.multi_vector else "(dim,)"
        want_ndim = 2 if self.info.multi_vector else 1
        if array.ndim != want_ndim or array.shape[-1] != self.info.dim or array.size == 0:
            raise InvalidInput(
                f"embedding has shape {array.shape}; this model needs {expected} with dim {self.info.dim}",
                index=index,
            )
        if not np.isfinite(array).all():
            raise InvalidInput("embedding has non-finite values", index=index)
        return array
