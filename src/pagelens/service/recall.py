"""The recall sampler: re-runs a sampled fraction of fast searches exactly, in the background.

A fast search returns at once; with probability `rate` (PAGELENS_RECALL_SAMPLE) its check (the
same query vectors, k, filter and prefetch, searched exactly: index/collection.py
`measure_recall`) is put on a bounded queue that one worker thread drains at the lowest CPU
priority (nice 19 on Linux; threads it starts, such as torch's, inherit it). The request path
only draws a random number and, when sampled, does a non-blocking put: a full queue drops the
sample (`dropped` counts them), so checks never pile up behind a burst of searches or slow one down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # checks waiting; more are dropped
LOWEST_PRIORITY = 19

Check = Callable[[Callable[[], bool]], object]  # runs one check; its argument says when to give up


def lower_priority(nice: int = LOWEST_PRIORITY) -> None:
    """Give the calling thread (and the threads it starts) CPU priority `nice` (19: the lowest), where the OS allows."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # Linux: per thread
    except (AttributeError, OSError) as error:
        log.debug("cannot lower the recall sampler's priority: %s", error)


class RecallSampler:
    """Sample checks at `rate` (0..1) onto a queue of `queue_size`; one worker runs them at `nice`
    (LOWEST_PRIORITY; a bench that waits for each check passes 0, or a busy machine starves it)."""

    def __init__(
        self, rate: float, *, queue_size: int = QUEUE_SIZE, seed: int | None = None, nice: int = LOWEST_PRIORITY
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the recall sample rate is between 0 and 1, got {rate}")
        self.rate, self.nice = rate, nice
        self.worker_id: int | None = None  # the worker's native thread id, once started
        self._random = random.Random(seed)
        self._queue: queue.Queue[Check | None] = queue.Queue(maxsize=queue_size)
        self._closed = threading.Event()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.sampled = self.dropped = self.checked = self.failed = 0

    def offer(self, check: Check) -> bool:
        """Queue `check` with probability `rate` (never blocking); whether it was queued."""
        if self._closed.is_set() or self.rate <= 0.0 or self._random.random() >= self.rate:
            return False
        self.sampled += 1
        self._start()
        try:
            self._queue.put_nowait(check)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="pagelens-recall", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        self.worker_id = threading.get_native_id()
        if self.nice:
            lower_priority(self.nice)
        while True:
            check = self._queue.get()
            try:
                if check is None or self._closed.is_set():
                    return
                check(self._closed.is_set)
                self.checked += 1
            except Exception as error:  # a collection deleted meanwhile, a store closing: skip this one
                self.failed += 1
                log.debug("a recall check failed: %s", error)
            finally:
                self._queue.task_done()

    def wait_idle(self) -> None:
        """Block until every queued check has run (tests, benches)."""
        self._queue.join()

    def stats(self) -> dict[str, object]:
        return {"rate": self.rate, "sampled": self.sampled, "dropped": self.dropped, "checked": self.checked,
                "failed": self.failed, "queued": self._queue.qsize()}  # fmt: skip

    def close(self, timeout: float = 5.0) -> None:
        """Stop: queued checks are dropped, one running gives up at its next step; wait up to `timeout` s."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
                self._queue.task_done()
            except queue.Empty:
                break
        if self._worker is not None:
            with contextlib.suppress(queue.Full):  # empty now: offers stopped once closed
                self._queue.put_nowait(None)
            self._worker.join(timeout)
