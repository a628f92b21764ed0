"""Admission control: items and image pixels in flight, against the engine's capacities.

A call is admitted whole or refused whole, at once, without waiting:

- more items in one call than the item capacity, or more pixels (width x height from the image
  headers, summed over the call's images) than the pixel capacity: `PayloadTooLarge` (413; the
  client splits the batch). One image alone is never too large here (its own limit is the
  per-image pixel limit), it only waits for an empty pixel queue;
- room now for the items but not for the pixels, or the reverse: `Overloaded` (429, retried).

Pixels stand for memory and preprocessing time: an image costs ~4 bytes a pixel once decoded,
whatever its compressed size, so the queue is bounded by what it will cost, not by its count.
"""

from __future__ import annotations

import threading

from pagelens.errors import Overloaded, PayloadTooLarge


class Admission:
    """Counts of items and pixels admitted and not yet released (thread-safe)."""

    def __init__(self, max_items: int, max_pixels: int) -> None:
        self.max_items = max_items
        self.max_pixels = max_pixels
        self.items = 0
        self.pixels = 0
        self._lock = threading.Lock()

    def admit(self, count: int, pixels: int = 0) -> None:
        """Take `count` items holding `pixels` image pixels in all, or raise (nothing taken)."""
        if count > self.max_items:
            raise PayloadTooLarge(f"{count} inputs in one call, over the engine's queue capacity of {self.max_items}")
        if pixels > self.max_pixels and count > 1:
            raise PayloadTooLarge(
                f"{count} images of {pixels:,} pixels in all in one call, over the engine's capacity of "
                f"{self.max_pixels:,} queued pixels; split the batch"
            )
        with self._lock:
            if self.items + count > self.max_items:
                raise Overloaded(f"queue full ({self.items} items in flight, capacity {self.max_items})")
            alone = count == 1 and self.pixels == 0  # a single image up to the per-image limit always fits alone
            if pixels and self.pixels + pixels > self.max_pixels and not alone:
                raise Overloaded(
                    f"queue full ({self.pixels:,} image pixels in flight, {pixels:,} more asked, "
                    f"capacity {self.max_pixels:,})"
                )
            self.items += count
            self.pixels += pixels

    def release(self, count: int = 1, pixels: int = 0) -> None:
        """Give back what one finished (or cancelled, or failed) item took."""
        with self._lock:
            self.items -= count
            self.pixels -= pixels
