"""The embedding engine: a request queue with one future per item, preprocessing threads, and
worker threads that form batches across callers and run the forward pass.

    callers ──submit──▶ pending: query | image ──▶ preprocess thread(s) ──▶ ready lanes: query | image
     (header checks,     (image bytes, not          (decode + processor,        │  (images: at most
      admission)          yet decoded)               queries first)             │   2 batches ahead)
                         futures ◀── results / errors ◀── workers: batch by count, token budget, wait

Memory: a submitted image is checked from its header only (format, size, pixel limit) and queued
as its compressed bytes; admission counts its pixels (engine/admission.py). The preprocessing
thread decodes it (reduced to `max_decoded_pixels`), runs the processor, and drops the image, so
decoded pixels exist for one image per preprocessing thread; a decode failure fails that item's
future with InvalidInput naming its index.

Guarantees: every submitted item's future ends with a result or an error (no hang, no silent
drop); a failing batch is split in halves down to single items, so one bad or oversized item
fails alone; a worker survives any exception a batch raises. Queries have their own lane, and by
default their own worker thread, so a query never waits behind an ingest: it runs beside the page
batch in flight (the forward pass is read-only, so two may run at once).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from pagelens.codecs.text import check_query
from pagelens.engine.admission import IN_PROCESS_WAIT, Admission
from pagelens.engine.config import EngineConfig, EngineStats, Kind
from pagelens.engine.heap import release_free_heap
from pagelens.engine.inputs import ImageInput, decoded, pixels_of
from pagelens.engine.results import ItemTiming, OutputDtype, acollect, collect, item_layout
from pagelens.errors import BackendFailure, InvalidInput, ModelNotReady, PagelensError
from pagelens.models.embedder import Prepared

log = logging.getLogger(__name__)

# A batch holds for calls not yet made at most this share of its kind's last forward (and at most
# max_wait_ms): a burst of concurrent calls, arriving a millisecond or two apart, then shares one
# forward where a slow one (a CPU query: 40-300 ms) makes the wait negligible, while a fast one
# (a GPU query: a few ms) hardly waits at all.
LINGER_SHARE = 0.05


class Backend(Protocol):
    """What the engine needs from a model (the Embedder, or a fake in unit tests)."""

    def prepare_image(self, image: Image.Image) -> Prepared: ...
    def prepare_query(self, text: str) -> Prepared: ...
    def collate(self, items: list[Prepared]) -> Any: ...
    def forward(self, batch: Any) -> list[np.ndarray]: ...


@dataclass
class _Work:
    kind: Kind
    payload: Any
    index: int
    future: Future
    prepared: Prepared | None = None
    submitted_at: float = field(default_factory=time.perf_counter)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocator failures."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


class Engine:
    """Dynamic batching over one Backend. Use as a context manager, or call `start()`/`close()`."""

    def __init__(self, backend: Backend, config: EngineConfig | None = None) -> None:
        self.backend = backend
        if config is None:
            config = EngineConfig.for_backend(backend) if hasattr(backend, "device") else EngineConfig()
        self.config = config
        self.stats = EngineStats()
        self.admission = Admission(config.max_queued_items, config.max_queued_pixels)
        # One condition guards the pending queues (submitted, not yet preprocessed) and the ready lanes.
        self._ready = threading.Condition()
        self._pending: dict[Kind, deque[_Work]] = {"query": deque(), "image": deque()}
        self._lanes: dict[Kind, deque[_Work]] = {"query": deque(), "image": deque()}
        self._preparing: dict[Kind, int] = {"query": 0, "image": 0}  # taken from pending, not yet in a lane
        self._last_forward_seconds: dict[Kind, float] = {"query": 0.0, "image": 0.0}
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Engine:
        if self._workers:
            return self
        for number in range(self.config.preprocess_threads):
            thread = threading.Thread(target=self._preprocess_loop, name=f"pagelens-preprocess-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        lanes: list[tuple[Kind, ...]] = [("query",), ("image",)] if self.config.query_worker else [("query", "image")]
        for kinds in lanes:
            worker = threading.Thread(
                target=self._worker_loop, args=(kinds,), name=f"pagelens-forward-{'+'.join(kinds)}", daemon=True
            )
            worker.start()
            self._workers.append(worker)
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting work, finish what is queued, and join the threads."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        with self._ready:
            self._ready.notify_all()
        for worker in self._workers:
            worker.join(timeout)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """True while the engine accepts and processes work."""
        return (
            not self._closing
            and bool(self._workers)
            and all(w.is_alive() for w in self._workers)
            and all(t.is_alive() for t in self._threads)
        )

    @property
    def queue_depth(self) -> int:
        """Items submitted and not finished."""
        return self.admission.items

    @property
    def queued_pixels(self) -> int:
        """Image pixels (from the headers) submitted and not finished."""
        return self.admission.pixels

    # ---------------------------------------------------------------- submission
    def submit_images(self, images: Sequence[ImageInput], *, wait: float = 0.0) -> list[Future]:
        """Check every image from its header (format, size, pixel limit; bytes are not decoded
        here), admit their pixels together, then enqueue them all.

        Raises InvalidInput naming the first bad input's index before anything is enqueued, and
        PayloadTooLarge / Overloaded when the call does not fit. With `wait` (seconds), the call is
        instead enqueued in runs that fit, each waiting for room (engine/admission.py). Pixel data
        that turns out corrupt when the preprocessing thread decodes it fails that item's future
        (InvalidInput, its index). Each future resolves to a float32 array.
        """
        payloads, pixels = [], []
        for index, image in enumerate(images):
            try:
                pixels.append(pixels_of(image, max_pixels=self.config.max_image_pixels))
            except PagelensError as error:
                raise error.with_index(index) from None
            payloads.append(image)
        if not wait:
            return self._enqueue("image", payloads, pixels)
        futures: list[Future] = []
        try:
            for start, end in self.admission.split(pixels):
                futures += self._enqueue("image", payloads[start:end], pixels[start:end], first=start, wait=wait)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return futures

    def submit_queries(self, texts: Sequence[str]) -> list[Future]:
        """Check every query, then enqueue them all (InvalidInput names the first bad index)."""
        checked = []
        for index, text in enumerate(texts):
            try:
                checked.append(check_query(text, max_chars=self.config.max_query_chars))
            except PagelensError as error:
                raise error.with_index(index) from None
        return self._enqueue("query", checked)

    def embed_images(
        self, images: Sequence[ImageInput], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Embed page images: one `(n_tokens, dim)` (or `(dim,)`) array per image, in input order.

        With `return_exceptions`, a failed item's slot holds its error instead of raising the first.
        A call over the queue's capacities, or meeting a full queue, waits for room in runs.
        """
        return collect(self.submit_images(images, wait=IN_PROCESS_WAIT), dtype, return_exceptions)

    def embed_pages(self, images: Sequence[ImageInput]) -> list[tuple[np.ndarray, dict | None]]:
        """`embed_images` (float32) with each page's patch layout (models/patches.py; None when the
        model gives none): what a collection stores, so a similarity map needs no re-embedding."""
        futures = self.submit_images(images, wait=IN_PROCESS_WAIT)
        vectors = collect(futures, "float32", False)
        return [(array, item_layout(future)) for array, future in zip(vectors, futures, strict=True)]

    def embed_queries(
        self, texts: Sequence[str], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Embed queries: one array per query, in input order (see `embed_images`)."""
        return collect(self.submit_queries(texts), dtype, return_exceptions)

    async def aembed_images(
        self, images: Sequence[ImageInput], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Async `embed_images`: header checks (and waits for room) run in a thread, never on the event loop."""
        futures = await asyncio.to_thread(lambda: self.submit_images(images, wait=IN_PROCESS_WAIT))
        return await acollect(futures, dtype, return_exceptions)

    async def aembed_queries(
        self, texts: Sequence[str], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Async `embed_queries`."""
        return await acollect(self.submit_queries(texts), dtype, return_exceptions)

    @staticmethod
    async def gather(futures: list[Future], *, dtype: OutputDtype = "float32", return_exceptions: bool = False) -> list:
        """Await submitted futures (from `submit_*`) in order; cancels them all if the caller is cancelled."""
        return await acollect(futures, dtype, return_exceptions)

    def _enqueue(
        self, kind: Kind, payloads: list[Any], pixels: list[int] | None = None, *, first: int = 0, wait: float = 0.0
    ) -> list[Future]:
        """Admit and queue `payloads` (the call's items `first`, `first + 1`, ...)."""
        if not self.alive:
            raise ModelNotReady("the embedding engine is not running")
        pixels = pixels or [0] * len(payloads)
        self.admission.admit(len(payloads), sum(pixels), wait=wait, alive=lambda: self.alive)
        works = []
        for index, (payload, item_pixels) in enumerate(zip(payloads, pixels, strict=True), start=first):
            future: Future = Future()
            future.add_done_callback(lambda _f, p=item_pixels: self.admission.release(1, p))
            works.append(_Work(kind, payload, index, future))
        with self._ready:
            self._pending[kind].extend(works)
            self._ready.notify_all()
        return [work.future for work in works]

    # ---------------------------------------------------------------- preprocessing
    def _next_to_prepare(self) -> _Work | None:
        """Block until there is work to preprocess (queries first; images only while fewer than
        `prepared_ahead` wait ready); None when closing and nothing is pending."""
        with self._ready:
            while True:
                if self._pending["query"]:
                    self._preparing["query"] += 1
                    return self._pending["query"].popleft()
                room = len(self._lanes["image"]) + self._preparing["image"] < self.config.prepared_ahead
                if self._pending["image"] and room:
                    self._preparing["image"] += 1
                    return self._pending["image"].popleft()
                if self._closing and not self._pending["image"]:
                    return None
                self._ready.wait(0.1)

    def _preprocess_loop(self) -> None:
        while True:
            work = self._next_to_prepare()
            if work is None:
                return
            try:
                if work.future.cancelled():
                    work.payload = None
                else:
                    self._prepare(work)
            finally:
                with self._ready:
                    self._preparing[work.kind] -= 1
                    if work.prepared is not None:
                        self._lanes[work.kind].append(work)
                    self._ready.notify_all()  # wake the worker of this lane, whichever it is

    def _prepare(self, work: _Work) -> None:
        """Decode (images) and run the processor; a failure fails the item's future with its index."""
        try:
            if work.kind == "query":
                work.prepared = self.backend.prepare_query(work.payload)
                return
            config = self.config
            image = decoded(
                work.payload, max_pixels=config.max_image_pixels, max_decoded_pixels=config.max_decoded_pixels
            )
            work.payload = None  # the bytes are no longer needed; the image goes when this returns
            work.prepared = self.backend.prepare_image(image)
        except PagelensError as error:
            self._fail(work, error.with_index(work.index))
        except Exception as error:
            self._fail(work, InvalidInput(f"preprocessing failed: {error}", index=work.index))
        finally:
            work.payload = None  # on failure too

    # ---------------------------------------------------------------- batching + forward
    def _worker_loop(self, kinds: tuple[Kind, ...]) -> None:
        try:
            while True:
                batch = self._next_batch(kinds)
                if batch is None:
                    return
                self._run(batch)
                if batch and batch[0].kind == "image" and self._images_idle():
                    release_free_heap()  # the burst's decoded pages and processor outputs are freed
        except BaseException as error:
            log.exception("engine worker stopped")
            self._closing = True
            self._fail_all(ModelNotReady(f"the embedding engine stopped: {error!r}"))
            raise
        finally:
            self._fail_all(ModelNotReady("the embedding engine stopped"))

    def _next_batch(self, kinds: tuple[Kind, ...]) -> list[_Work] | None:
        """Block until one of `kinds` has work; return its next batch (queries first), or None when closing."""
        with self._ready:
            while not any(self._lanes[kind] for kind in kinds):
                idle = not any(self._pending.values()) and not any(t.is_alive() for t in self._threads)
                if self._closing and idle:
                    return None
                self._ready.wait(0.1)
            kind: Kind = next(kind for kind in kinds if self._lanes[kind])
            lane, limit = self._lanes[kind], self.config.max_batch(kind)
            now, max_wait = time.monotonic(), self.config.max_wait_ms / 1000
            for_submitted = now + max_wait
            for_callers = now + min(max_wait, LINGER_SHARE * self._last_forward_seconds[kind])
            while len(lane) < limit and not self._closing:
                remaining = (for_submitted if self._coming(kind) else for_callers) - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            return self._take(lane, limit)

    def _coming(self, kind: Kind) -> bool:
        """Whether items of `kind` were submitted but are not in its lane yet (pending or being
        prepared): a batch waits up to `max_wait_ms` for those, but for calls not yet made only
        LINGER_SHARE of its kind's last forward."""
        return bool(self._pending[kind]) or self._preparing[kind] > 0

    def _images_idle(self) -> bool:
        """True when no image is pending, being prepared, or ready (the end of a burst)."""
        with self._ready:
            return not (self._pending["image"] or self._preparing["image"] or self._lanes["image"])

    def _take(self, lane: deque[_Work], limit: int) -> list[_Work]:
        batch: list[_Work] = []
        longest = 0
        while lane and len(batch) < limit:
            candidate = lane[0]
            assert candidate.prepared is not None
            padded = (len(batch) + 1) * max(longest, candidate.prepared.n_tokens)
            if batch and padded > self.config.max_batch_tokens:
                break
            lane.popleft()
            if not candidate.future.set_running_or_notify_cancel():
                continue  # the caller gave up on it
            batch.append(candidate)
            longest = max(longest, candidate.prepared.n_tokens)
        self._ready.notify_all()  # room in the lane: the preprocessing thread may prepare more
        return batch

    def _run(self, batch: list[_Work]) -> None:
        """Forward `batch`; on failure split it in halves down to single items."""
        if not batch:
            return
        started = time.perf_counter()
        try:
            outputs = self.backend.forward(self.backend.collate([work.prepared for work in batch]))
            if len(outputs) != len(batch):
                raise BackendFailure(f"model returned {len(outputs)} outputs for {len(batch)} inputs")
        except Exception as error:
            out_of_memory = is_out_of_memory(error)
            if out_of_memory and torch.cuda.is_available():
                torch.cuda.empty_cache()  # only after an OOM, never per batch
            if len(batch) > 1:
                log.warning("batch of %d failed (%r); retrying in halves", len(batch), error)
                self.stats.batch_splits += 1
                middle = len(batch) // 2
                self._run(batch[:middle])
                self._run(batch[middle:])
                return
            work = batch[0]
            reason = "ran out of memory even when embedded alone" if out_of_memory else f"model failed: {error}"
            log.error("%s input %d %s", work.kind, work.index, reason)
            self._fail(work, BackendFailure(reason, index=work.index))
            return
        finished = time.perf_counter()
        self._last_forward_seconds[batch[0].kind] = finished - started
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        self.stats.batch_size_counts[len(batch)] += 1
        self.stats.items_embedded += len(batch)
        for work, output in zip(batch, outputs, strict=True):
            work.future.pagelens_layout = work.prepared.layout  # type: ignore[attr-defined,union-attr]
            work.prepared = None
            work.future.pagelens_timing = ItemTiming(started - work.submitted_at, finished - started)  # type: ignore[attr-defined]
            work.future.set_result(output)

    def _fail(self, work: _Work, error: PagelensError) -> None:
        self.stats.items_failed += 1
        future = work.future
        if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
            future.set_exception(error)

    def _fail_all(self, error: PagelensError) -> None:
        with self._ready:
            pending = []
            for queues in (self._lanes, self._pending):
                for kind in ("query", "image"):
                    pending.extend(queues[kind])
                    queues[kind].clear()
            self._ready.notify_all()
        for work in pending:
            self._fail(work, error)
