"""Reused buffers for per-query tensors.

A search's large tensors (rows read from the mirror file, their float32 copy, a shortlist's
centroids) allocated anew cost a page fault per 4 KiB each time (glibc maps blocks over 32 MiB
afresh), which was a third of a fast search at 10k pages; reusing them removes that cost.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class Scratch:
    """Named buffers reused across searches; `take` hands out a view of the wanted shape."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self._buffers[name] = torch.empty(size, dtype=dtype)
        return buffer[:size].view(shape)


class ScratchPool:
    """Scratch sets lent to one search at a time, so memory held is bounded by concurrent searches,
    not by the number of collections."""

    def __init__(self) -> None:
        self._free: list[Scratch] = []
        self._lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[Scratch]:
        with self._lock:
            scratch = self._free.pop() if self._free else Scratch()
        try:
            yield scratch
        finally:
            with self._lock:
                self._free.append(scratch)


SCRATCH = ScratchPool()
