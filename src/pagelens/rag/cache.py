"""The answer cache: finished answers by everything that decides them, least recently used out;
and the query-embedding cache that /search and /ask share (`QueryEmbeddingCache`, at the end).

    cache = AnswerCache(size=256, ttl_seconds=3600)
    key = answer_key(collection="reports", generation=7, question="What was revenue?", k=3, ...)
    cached = cache.get(key)        # CachedAnswer or None
    cache.put(key, CachedAnswer(...))

A key holds the collection's generation: a counter its owner bumps after every change to the
collection (an upload stored, a document deleted or its metadata changed, the collection deleted
or imported). A change therefore makes every earlier key unreachable at once, with no timing
involved; the stale entries age out of the LRU. The question is normalized (Unicode NFKC, case
folded, whitespace collapsed), so "What was revenue? " and "what  was revenue?" share an answer.
Thread-safe.
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pagelens.rag.generator import Usage


@dataclass(frozen=True)
class CachedAnswer:
    """A finished answer: its text as the pieces it streamed in, the sources, model and usage."""

    pieces: tuple[str, ...]
    sources: tuple[dict[str, Any], ...]
    model: str
    usage: Usage
    finish_reason: str = "stop"

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def normalize_question(question: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


def answer_key(
    *,
    collection: str,
    generation: int,
    question: str,
    k: int,
    mode: str,
    prefetch: int | None,
    filter: dict[str, Any] | None,
    model: str,
    max_tokens: int,
    images: bool,
) -> tuple:
    """Everything an answer depends on, as a hashable tuple (the filter as canonical JSON)."""
    canonical_filter = json.dumps(filter, sort_keys=True, default=str) if filter else ""
    return (collection, generation, normalize_question(question), k, mode, prefetch, canonical_filter, model,
            max_tokens, images)  # fmt: skip


class AnswerCache:
    """At most `size` answers (0: none kept), each for at most `ttl_seconds`; counts hits and misses."""

    def __init__(self, size: int, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl_seconds, self._clock = size, ttl_seconds, clock
        self._entries: OrderedDict[tuple, tuple[float, CachedAnswer]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> CachedAnswer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] <= self.ttl_seconds:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key: tuple, answer: CachedAnswer) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock(), answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class QueryEmbeddingCache:
    """Query embeddings by (model, exact query text), least recently used out: a question asked again
    (by /search or /ask, at another k or filter) skips the model. At most `size` entries (0: none).
    Arrays come back read-only, shared by every caller. Thread-safe; counts hits and misses."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, model: str, query: str) -> Any:
        with self._lock:
            vectors = self._entries.get((model, query))
            if vectors is None:
                self.misses += 1
                return None
            self._entries.move_to_end((model, query))
            self.hits += 1
            return vectors

    def put(self, model: str, query: str, vectors: Any) -> None:
        if self.size <= 0:
            return
        vectors.setflags(write=False)  # shared: nobody may change it in place
        with self._lock:
            self._entries[(model, query)] = vectors
            self._entries.move_to_end((model, query))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
