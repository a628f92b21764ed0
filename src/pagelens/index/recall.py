"""Live recall of the fast mode, and the default prefetch that adapts to keep it at a target.

A sampled fraction of real fast searches is re-run exactly, off the request path (the sampler:
service/recall.py); each re-run gives one recall@k, the share of the exact top-k the fast search
returned (its own k; a fast search returns exact MaxSim scores, so only missed pages cost recall).
`AdaptivePrefetch` keeps, per collection:

- the last WINDOW samples, whatever prefetch they ran at: `recall` and `samples` (what
  `GET /collections/{c}` and `/metrics` show);
- the last MIN_SAMPLES_TO_LOWER samples taken at the collection's default prefetch since it last
  changed (searches that named their own `prefetch` are measured but never move the default): once
  there are MIN_SAMPLES_TO_RAISE, a mean recall below the target raises the default by RAISE_FACTOR
  (RAISE_FACTOR_FAR when short by more than FAR_BELOW); once there are MIN_SAMPLES_TO_LOWER at a
  mean of target + LOWER_MARGIN or more, it lowers it by LOWER_FACTOR, never to or below a prefetch
  already measured short of the target.
  The default stays within PREFETCH_BOUNDS (50..2000).

On Edge a prefetch sets both of the fast mode's cuts (index/centroids.py `coarse_keep`): raising it
also widens the coarse cut, which is what loses recall on diverse pages in a large collection.

The adapted default is stored in `<collection directory>/search.json` (`{"prefetch": 150,
"short_at": 100}`) beside the collection's binding record, so a restart keeps it; a collection
without the file (made before it existed) starts from its store's default prefetch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pagelens.index.edge_store import EdgePageStore
from pagelens.index.files import write_atomically
from pagelens.index.pages import PageStore, SearchHit

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
PREFETCH_BOUNDS = (50, 2000)  # the adapted default prefetch stays within these
DEFAULT_TARGET_RECALL = 0.95
WINDOW = 200  # samples the reported recall is the mean of
MIN_SAMPLES_TO_RAISE = 20  # at the default prefetch, before a recall short of the target raises it
MIN_SAMPLES_TO_LOWER = 100  # at the default prefetch, before a recall well above the target lowers it
LOWER_MARGIN = 0.02  # "well above": at least target + LOWER_MARGIN
FAR_BELOW = 0.05
RAISE_FACTOR, RAISE_FACTOR_FAR, LOWER_FACTOR = 1.5, 2.0, 0.9


def recall_at_k(fast: Sequence[SearchHit], exact: Sequence[SearchHit]) -> float | None:
    """Share of the exact top-k pages (by document and page) the fast search returned; None when
    the exact search found nothing (no page matches: nothing to miss)."""
    wanted = {(hit.document_id, hit.page) for hit in exact}
    if not wanted:
        return None
    return len(wanted & {(hit.document_id, hit.page) for hit in fast}) / len(wanted)


@dataclass(frozen=True)
class RecallSample:
    recall: float
    prefetch: int  # what the fast search ran at
    k: int


class AdaptivePrefetch:
    """One collection's measured fast-mode recall and its adapted default prefetch (thread-safe).

    `path`: where the adapted default is stored (None: not stored); `initial`: the store's default
    prefetch, used when nothing is stored; `target`: the recall to keep (0.5..1)."""

    def __init__(
        self,
        path: Path | None,
        *,
        initial: int,
        target: float = DEFAULT_TARGET_RECALL,
        bounds: tuple[int, int] = PREFETCH_BOUNDS,
        window: int = WINDOW,
    ) -> None:
        self.path, self.target, self.bounds = path, target, bounds
        self._lock = threading.Lock()
        self._window: deque[RecallSample] = deque(maxlen=window)
        self._at_default: deque[float] = deque(maxlen=MIN_SAMPLES_TO_LOWER)  # the last at the current default
        self.history: list[dict[str, Any]] = []  # each change: {"from", "to", "recall", "samples"}
        stored = self._read()
        self._prefetch = self._clamp(stored.get("prefetch", initial))
        self._short_at = stored.get("short_at")  # the largest default measured short of the target

    def _clamp(self, prefetch: int) -> int:
        return min(max(int(prefetch), self.bounds[0]), self.bounds[1])

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            stored = json.loads(self.path.read_text())
            if not isinstance(stored.get("prefetch"), int):
                raise ValueError("no integer 'prefetch'")
            if not isinstance(stored.get("short_at"), int | None):
                raise ValueError("'short_at' is not an integer")
            return stored
        except (OSError, ValueError, AttributeError) as error:
            log.error("%s is unreadable (%s); the fast mode starts from the store's default prefetch", self.path, error)
            return {}

    def _write(self) -> None:
        if self.path is not None:
            record = {"prefetch": self._prefetch, "short_at": self._short_at}
            try:
                write_atomically(self.path, json.dumps(record).encode())
            except OSError as error:  # the collection was deleted meanwhile, or the disk is full
                log.error("cannot store the adapted prefetch in %s (%s)", self.path, error)

    @property
    def prefetch(self) -> int:
        """The fast mode's default prefetch now."""
        return self._prefetch

    def record(self, recall: float, *, prefetch: int, k: int) -> None:
        """One sampled fast search's recall@k, run at `prefetch`; adapts the default when due."""
        if not (0.0 <= recall <= 1.0):
            raise ValueError(f"a recall is between 0 and 1, got {recall}")
        with self._lock:
            self._window.append(RecallSample(recall, prefetch, k))
            if prefetch != self._prefetch:
                return  # a search that named its own prefetch: measured, but it says nothing of the default
            self._at_default.append(recall)
            mean = sum(self._at_default) / len(self._at_default)
            if len(self._at_default) >= MIN_SAMPLES_TO_RAISE and mean < self.target:
                self._short_at = max(self._prefetch, self._short_at or 0)
                factor = RAISE_FACTOR_FAR if mean < self.target - FAR_BELOW else RAISE_FACTOR
                self._change(math.ceil(self._prefetch * factor), mean)
            elif len(self._at_default) >= MIN_SAMPLES_TO_LOWER and mean >= self.target + LOWER_MARGIN:
                lower = math.floor(self._prefetch * LOWER_FACTOR)
                if self._short_at is not None:
                    lower = max(lower, self._short_at + 1)
                self._change(lower, mean)

    def _change(self, prefetch: int, mean: float) -> None:
        prefetch = self._clamp(prefetch)
        samples = len(self._at_default)
        self._at_default.clear()  # the next verdict is on the new default's own samples
        if prefetch == self._prefetch:
            return
        log.info("fast-mode prefetch %d -> %d (measured recall %.3f over %d samples, target %.2f)",
                 self._prefetch, prefetch, mean, samples, self.target)  # fmt: skip
        self.history.append({"from": self._prefetch, "to": prefetch, "recall": round(mean, 4), "samples": samples})
        self._prefetch = prefetch
        self._write()

    def stats(self) -> dict[str, Any]:
        """`{prefetch, prefetch_bounds, target_recall, recall, samples, recall_at_prefetch,
        samples_at_prefetch}`: `recall` the mean recall@k of the last `samples` (<= WINDOW) sampled
        fast searches at any prefetch, `recall_at_prefetch` that of the last (<= MIN_SAMPLES_TO_LOWER)
        at the default prefetch since it was last set (None without samples)."""
        with self._lock:
            window = [sample.recall for sample in self._window]
            at_default = list(self._at_default)
            return {
                "prefetch": self._prefetch,
                "prefetch_bounds": list(self.bounds),
                "target_recall": self.target,
                "recall": round(sum(window) / len(window), 4) if window else None,
                "samples": len(window),
                "recall_at_prefetch": round(sum(at_default) / len(at_default), 4) if at_default else None,
                "samples_at_prefetch": len(at_default),
            }


def measure_recall(
    store: PageStore,
    adaptive: AdaptivePrefetch,
    query: np.ndarray,
    fast_hits: Sequence[SearchHit],
    *,
    k: int,
    prefetch: int,
    filter: dict[str, Any] | None,
    cancelled: Callable[[], bool] = lambda: False,
) -> float | None:
    """Re-run a fast search exactly (the same query vectors, k and filter), record its recall@k at
    `prefetch` in `adaptive` and return it; None when the exact search found nothing or `cancelled()`
    stopped it. On Edge the exact scan holds the store's lock a step of pages at a time
    (`exact_search_in_steps`), so searches arriving meanwhile are not held up for the whole scan."""
    if isinstance(store, EdgePageStore):
        exact = store.exact_search_in_steps(query, k=k, filter=filter, cancelled=cancelled)
    else:
        exact = store.search(query, k=k, mode="exact", filter=filter)
    recall = None if exact is None else recall_at_k(fast_hits, exact)
    if recall is not None:
        adaptive.record(recall, prefetch=prefetch, k=k)
    return recall
