"""A fake model backend for engine and server unit tests: deterministic vectors, no torch model.

An image of size (w, h) yields `1 + (w * h) // 10_000` vectors, a query `len(words) + 10` (with
`multi_vector=False`, one `(dim,)` vector each, as Bi* models give); values are seeded from the
input's content, so equal inputs give equal vectors in any batch. Hooks let a test slow the forward
pass down or make it raise (e.g. an injected out-of-memory error). `info` and `device` make it a
model a `Runtime` can start.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from pagelens.models.embedder import EmbedderInfo, Prepared

ForwardHook = Callable[[list[Prepared]], None]


class FakeBackend:
    def __init__(
        self,
        *,
        dim: int = 16,
        forward_seconds: float = 0.0,
        on_forward: ForwardHook | None = None,
        multi_vector: bool = True,
        name: str = "fake/model",
    ):
        self.dim = dim
        self.multi_vector = multi_vector
        self.device = torch.device("cpu")
        self.info = EmbedderInfo(name, "fake", dim, multi_vector, "cpu", "float32", "none")
        self.forward_seconds = forward_seconds
        self.on_forward = on_forward
        self.batches: list[list[Prepared]] = []
        self.prepared_count = 0
        self._lock = threading.Lock()

    def _prepared(self, kind: str, content: bytes, n_tokens: int) -> Prepared:
        with self._lock:
            self.prepared_count += 1
        seed = int.from_bytes(hashlib.sha256(kind.encode() + content).digest()[:7], "little")
        return Prepared(kind, {"seed": torch.tensor([seed])}, n_tokens)  # type: ignore[arg-type]

    def prepare_image(self, image: Image.Image) -> Prepared:
        width, height = image.size
        content = f"{width}x{height}".encode() + image.convert("RGB").tobytes()
        return self._prepared("image", content, 1 + (width * height) // 10_000)

    def prepare_query(self, text: str) -> Prepared:
        return self._prepared("query", text.encode(), len(text.split()) + 10)

    def collate(self, items: list[Prepared]) -> list[Prepared]:
        return list(items)

    def forward(self, batch: list[Prepared]) -> list[np.ndarray]:
        with self._lock:
            self.batches.append(batch)
        if self.on_forward is not None:
            self.on_forward(batch)
        if self.forward_seconds:
            time.sleep(self.forward_seconds)
        return [self.expected(item) for item in batch]

    def expected(self, item: Prepared) -> np.ndarray:
        """The vectors `forward` returns for `item`, whatever batch it is in."""
        rng = np.random.default_rng(int(item.features["seed"].item()))
        rows = item.n_tokens if self.multi_vector else 1
        vectors = rng.standard_normal((rows, self.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors if self.multi_vector else vectors[0]


def embed_alone(backend: Any, kind: str, payload: Any) -> np.ndarray:
    """Reference: one input through prepare + forward on its own (no engine, no batching)."""
    prepared = backend.prepare_image(payload) if kind == "image" else backend.prepare_query(payload)
    return backend.forward(backend.collate([prepared]))[0]
