"""The embedding engine: a request queue with one future per item, preprocessing threads, and
worker threads that form batches across callers and run the forward pass.

    callers ──submit──▶ incoming queue ──▶ preprocess thread(s) ──▶ ready lanes: query | image
                                                                       │
                         futures ◀── results / errors ◀── workers: batch by count, token budget, wait

Guarantees: every submitted item's future ends with a result or an error (no hang, no silent
drop); a failing batch is split in halves down to single items, so one bad or oversized item
fails alone; a worker survives any exception a batch raises. Queries have their own lane, and by
default their own worker thread, so a query never waits behind an ingest: it runs beside the page
batch in flight (the forward pass is read-only, so two may run at once).
"""

from __future__ import annotations

import asyncio
import logging
import queue
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

from pagelens.codecs.images import check_image, decode_image
from pagelens.codecs.text import check_query
from pagelens.engine.config import EngineConfig, EngineStats, Kind
from pagelens.engine.results import ItemTiming, OutputDtype, acollect, collect
from pagelens.errors import (
    BackendFailure,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    PagelensError,
    PayloadTooLarge,
)
from pagelens.models.embedder import Prepared

log = logging.getLogger(__name__)

ImageInput = Image.Image | bytes


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
            device = getattr(backend, "device", None)
            config = EngineConfig.for_device(device.type) if device is not None else EngineConfig()
        self.config = config
        self.stats = EngineStats()
        self._incoming: queue.Queue[_Work | None] = queue.Queue()
        self._lanes: dict[Kind, deque[_Work]] = {"query": deque(), "image": deque()}
        self._ready = threading.Condition()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
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
        self._closing = True
        for _ in self._threads:
            self._incoming.put(None)
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
        return self._in_flight

    # ---------------------------------------------------------------- submission
    def submit_images(self, images: Sequence[ImageInput]) -> list[Future]:
        """Check every image (bytes are decoded, with the pixel limit), then enqueue them all.

        Raises InvalidInput naming the first bad input's index before anything is enqueued.
        Each future resolves to a float32 array.
        """
        checked = [self._check_image(image, index) for index, image in enumerate(images)]
        return self._enqueue("image", checked)

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
        """
        return collect(self.submit_images(images), dtype, return_exceptions)

    def embed_queries(
        self, texts: Sequence[str], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Embed queries: one array per query, in input order (see `embed_images`)."""
        return collect(self.submit_queries(texts), dtype, return_exceptions)

    async def aembed_images(
        self, images: Sequence[ImageInput], *, dtype: OutputDtype = "float32", return_exceptions: bool = False
    ) -> list[Any]:
        """Async `embed_images`: decoding runs in a thread, so the event loop never blocks."""
        futures = await asyncio.to_thread(self.submit_images, images)
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

    def _check_image(self, image: ImageInput, index: int) -> Image.Image:
        try:
            if isinstance(image, Image.Image):
                check_image(image, max_pixels=self.config.max_image_pixels)
                return image
            return decode_image(image, max_pixels=self.config.max_image_pixels)
        except PagelensError as error:
            raise error.with_index(index) from None

    def _enqueue(self, kind: Kind, payloads: list[Any]) -> list[Future]:
        if not self.alive:
            raise ModelNotReady("the embedding engine is not running")
        count = len(payloads)
        if count > self.config.max_queued_items:
            raise PayloadTooLarge(
                f"{count} inputs in one call, over the engine's queue capacity of {self.config.max_queued_items}"
            )
        with self._in_flight_lock:
            if self._in_flight + count > self.config.max_queued_items:
                raise Overloaded(
                    f"queue full ({self._in_flight} items in flight, capacity {self.config.max_queued_items})"
                )
            self._in_flight += count
        futures = []
        for index, payload in enumerate(payloads):
            future: Future = Future()
            future.add_done_callback(self._item_done)
            futures.append(future)
            self._incoming.put(_Work(kind, payload, index, future))
        return futures

    def _item_done(self, _future: Future) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1

    # ---------------------------------------------------------------- preprocessing
    def _preprocess_loop(self) -> None:
        while True:
            work = self._incoming.get()
            if work is None:
                return
            if work.future.cancelled():
                continue
            try:
                if work.kind == "image":
                    work.prepared = self.backend.prepare_image(work.payload)
                else:
                    work.prepared = self.backend.prepare_query(work.payload)
            except Exception as error:
                self._fail(work, InvalidInput(f"preprocessing failed: {error}", index=work.index))
                continue
            work.payload = None  # the decoded image is no longer needed
            with self._ready:
                self._lanes[work.kind].append(work)
                self._ready.notify_all()  # wake the worker of this lane, whichever it is

    # ---------------------------------------------------------------- batching + forward
    def _worker_loop(self, kinds: tuple[Kind, ...]) -> None:
        try:
            while True:
                batch = self._next_batch(kinds)
                if batch is None:
                    return
                self._run(batch)
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
                if self._closing and self._incoming.empty() and not any(t.is_alive() for t in self._threads):
                    return None
                self._ready.wait(0.1)
            kind: Kind = next(kind for kind in kinds if self._lanes[kind])
            lane, limit = self._lanes[kind], self.config.max_batch(kind)
            deadline = time.monotonic() + self.config.max_wait_ms / 1000
            while len(lane) < limit and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            return self._take(lane, limit)

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
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        self.stats.batch_size_counts[len(batch)] += 1
        self.stats.items_embedded += len(batch)
        for work, output in zip(batch, outputs, strict=True):
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
            pending = [*self._lanes["query"], *self._lanes["image"]]
            self._lanes["query"].clear()
            self._lanes["image"].clear()
        while True:
            try:
                work = self._incoming.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                pending.append(work)
        for work in pending:
            self._fail(work, error)
