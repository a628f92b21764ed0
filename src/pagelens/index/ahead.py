"""Pipelining an ingest's stages: each stage runs one item ahead of the next in its own thread.

    for vectors in run_ahead(embed(batch) for batch in run_ahead(rendered_batches)):
        store(vectors)          # batch i is stored while batch i+1 embeds and batch i+2 renders

Rendering happens in the PDF worker processes and embedding in the engine's threads, so the
stages overlap on separate cores; what the caller's thread does (storing) overlaps them too.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def run_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items` with the next one produced in a thread while the caller works on the current one.
    At most one finished item waits; an exception of the producer is raised to the caller at that
    item; when the caller stops early, the producer finishes its item and `items` is closed before
    this returns."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            ready.put(error)

    producer = threading.Thread(target=produce, name="pagelens-ahead", daemon=True)
    producer.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while producer.is_alive():  # unblock a put, let the thread finish its item
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        close = getattr(items, "close", None)
        if close is not None:
            close()
