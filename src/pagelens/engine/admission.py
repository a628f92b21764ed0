"""Admission control: items and image pixels in flight, against the engine's capacities.

A call is admitted whole or refused whole:

- more items in one call than the item capacity, or more pixels (width x height from the image
  headers, summed over the call's images) than the pixel capacity: `PayloadTooLarge` (413; the
  client splits the batch). One image alone is never too large here (its own limit is the
  per-image pixel limit), it only waits for an empty pixel queue;
- room now for the items but not for the pixels, or the reverse: `Overloaded` (429, retried) at
  once, or, for in-process callers that would rather wait (`wait=` seconds), when no room came.

In-process callers (ingest, the CLI, the library) `split` a large call into runs that each fit
and admit them one after another, waiting for room: they are bounded the same way, never refused.

Pixels stand for memory and preprocessing time: an image costs ~4 bytes a pixel once decoded,
whatever its compressed size, so the queue is bounded by what it will cost, not by its count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pagelens.errors import ModelNotReady, Overloaded, PayloadTooLarge

IN_PROCESS_WAIT = 600.0  # seconds a blocking in-process call waits for queue room before Overloaded


class Admission:
    """Counts of items and pixels admitted and not yet released (thread-safe)."""

    def __init__(self, max_items: int, max_pixels: int) -> None:
        self.max_items = max_items
        self.max_pixels = max_pixels
        self.items = 0
        self.pixels = 0
        self._room = threading.Condition()

    def admit(self, count: int, pixels: int = 0, *, wait: float = 0.0, alive: Callable[[], bool] | None = None) -> None:
        """Take `count` items holding `pixels` image pixels in all, or raise (nothing taken).

        With `wait`, a call that fits the capacities waits up to that many seconds for room
        (ModelNotReady as soon as `alive()` turns false)."""
        if count > self.max_items:
            raise PayloadTooLarge(f"{count} inputs in one call, over the engine's queue capacity of {self.max_items}")
        if pixels > self.max_pixels and count > 1:
            raise PayloadTooLarge(
                f"{count} images of {pixels:,} pixels in all in one call, over the engine's capacity of "
                f"{self.max_pixels:,} queued pixels; split the batch"
            )
        deadline = time.monotonic() + wait
        with self._room:
            while (refusal := self._refusal(count, pixels)) is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Overloaded(refusal)
                if alive is not None and not alive():
                    raise ModelNotReady("the embedding engine stopped")
                self._room.wait(min(remaining, 0.1))
            self.items += count
            self.pixels += pixels

    def _refusal(self, count: int, pixels: int) -> str | None:
        if self.items + count > self.max_items:
            return f"queue full ({self.items} items in flight, capacity {self.max_items})"
        alone = count == 1 and self.pixels == 0  # a single image up to the per-image limit always fits alone
        if pixels and self.pixels + pixels > self.max_pixels and not alone:
            return (
                f"queue full ({self.pixels:,} image pixels in flight, {pixels:,} more asked, "
                f"capacity {self.max_pixels:,})"
            )
        return None

    def release(self, count: int = 1, pixels: int = 0) -> None:
        """Give back what one finished (or cancelled, or failed) item took."""
        with self._room:
            self.items -= count
            self.pixels -= pixels
            self._room.notify_all()

    def split(self, pixels: list[int]) -> list[tuple[int, int]]:
        """`[start, end)` runs of consecutive items, in order, each within both capacities (an
        image over the pixel capacity is a run of its own)."""
        runs, start, total = [], 0, 0
        for index, item in enumerate(pixels):
            full = index - start >= self.max_items or (index > start and total + item > self.max_pixels)
            if full:
                runs.append((start, index))
                start, total = index, 0
            total += item
        if start < len(pixels):
            runs.append((start, len(pixels)))
        return runs
