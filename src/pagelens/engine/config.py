"""Engine settings (batching and admission limits, per-device defaults) and its counters."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pagelens.codecs.images import DEFAULT_MAX_DECODED_PIXELS, DEFAULT_MAX_IMAGE_PIXELS
from pagelens.codecs.text import DEFAULT_MAX_QUERY_CHARS

Kind = Literal["image", "query"]


@dataclass(frozen=True)
class EngineConfig:
    """Batching and admission limits.

    A batch holds at most `max_batch_images` images or `max_batch_queries` queries, and at most
    `max_batch_tokens` padded tokens (batch size x longest sequence); a single item over the token
    budget runs alone. The worker waits up to `max_wait_ms` for items already submitted (still
    being preprocessed) to join a batch, and for calls not yet made at most a twentieth of its
    last forward of that kind (engine/batcher.py LINGER_SHARE). At most
    `max_queued_items` items, holding at most `max_queued_pixels` image pixels (width x height from
    each image's header), are in flight; more get `Overloaded` at once, and one call over either
    capacity `PayloadTooLarge` (engine/admission.py). With `query_worker`, queries have a forward
    thread of their own, so a query runs beside a long page batch instead of waiting for it to end;
    without, one thread serves both lanes, queries first.

    Image bytes are decoded by the preprocessing thread, just before the processor, one image at a
    time; an image over `max_decoded_pixels` is reduced to it as it decodes (aspect kept). The
    preprocessing thread runs at most `prepared_ahead` images ahead of the image worker (2 batches),
    so processor outputs (ColQwen2.5: ~14 MB of float32 per page) never pile up behind a slow forward.
    """

    max_batch_images: int = 4
    max_batch_queries: int = 32
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_queued_items: int = 1024
    max_queued_pixels: int = 150_000_000  # ~600 MB were it all decoded at once (PIL RGB: 4 bytes a pixel)
    preprocess_threads: int = 1
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    query_worker: bool = True

    def max_batch(self, kind: Kind) -> int:
        return self.max_batch_images if kind == "image" else self.max_batch_queries

    @property
    def prepared_ahead(self) -> int:
        """Prepared images the preprocessing thread(s) may hold ready before the image worker takes them."""
        return max(2, 2 * self.max_batch_images)

    @classmethod
    def for_device(cls, device_type: str, **overrides: Any) -> EngineConfig:
        """Defaults measured per device. On a CPU, page images go one at a time: a batch of pages is
        no faster per page there and delays every page in it (2 cores, published dims, singles
        against batches of 4 alternating: ColQwen2.5 1.13x, ColModernVBert 1.06-1.13x, ColPali
        0.98x; scripts/profile_page_batching.py, docs/benchmarks.md); queries still batch."""
        images = 1 if device_type == "cpu" else 8
        return cls(**{"max_batch_images": images, **overrides})

    @classmethod
    def for_backend(cls, backend: Any, **overrides: Any) -> EngineConfig:
        """`for_device` with the backend's device (a backend without one: the CPU's)."""
        device = getattr(backend, "device", None)
        return cls.for_device(device.type if device is not None else "cpu", **overrides)


@dataclass
class EngineStats:
    """Counters since start (read by /metrics)."""

    batches: int = 0
    items_embedded: int = 0
    items_failed: int = 0
    batch_splits: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    batch_size_counts: Counter[int] = field(default_factory=Counter)
