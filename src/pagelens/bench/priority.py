"""`pagelens bench priority`: query latency while pages are being ingested, against idle.

ColQwen2.5-3B layer dimensions (random weights, bf16, cut-down depth as in `bench engine`). For
each engine mode, the p50 of single queries is measured idle, then while a background thread keeps
the page lane busy. Bar (issue #4): p50 during ingest <= 2 x idle p50.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from pagelens.bench.engine import published_colqwen2_5, published_processor, synthetic_page


def _query_latencies(engine, count: int) -> list[float]:
    latencies = []
    for number in range(count):
        started = time.perf_counter()
        engine.embed_queries([f"what is the revenue of segment {number}?"])
        latencies.append(time.perf_counter() - started)
    return latencies


def run(*, text_layers: int = 4, vision_layers: int = 4, queries: int = 8) -> dict[str, dict[str, float]]:
    from pagelens.engine import Engine, EngineConfig
    from pagelens.models import Embedder
    from pagelens.models.families import get_family

    with tempfile.TemporaryDirectory() as scratch:
        processor = published_processor(Path(scratch))
    model = published_colqwen2_5(text_layers, vision_layers, processor, "sdpa")
    embedder = Embedder(model, processor, get_family("colqwen2_5"), name="colqwen2.5-3b-dims", attention="sdpa")
    page = synthetic_page(0)
    results: dict[str, dict[str, float]] = {}
    for label, query_worker in (("queries on their own worker", True), ("one worker, queries first", False)):
        with Engine(embedder, EngineConfig(max_batch_images=1, query_worker=query_worker)) as engine:
            engine.embed_queries(["warm up"])
            idle = statistics.median(_query_latencies(engine, queries))
            stop = threading.Event()

            def ingest(engine=engine, stop=stop) -> None:
                while not stop.is_set():
                    engine.embed_images([page, page])

            feeder = threading.Thread(target=ingest)
            feeder.start()
            time.sleep(1.0)  # the page lane is busy from here on
            busy = statistics.median(_query_latencies(engine, queries))
            stop.set()
            feeder.join()
        results[label] = {"idle_p50_ms": idle * 1000, "ingest_p50_ms": busy * 1000, "ratio": busy / idle}
    print(f"ColQwen2.5-3B dims, {text_layers} text + {vision_layers} vision layers, bf16; {queries} queries each")
    print(f"{'engine mode':30} {'idle p50 ms':>12} {'ingest p50 ms':>14} {'ratio':>7}")
    for label, row in results.items():
        print(f"{label:30} {row['idle_p50_ms']:12.0f} {row['ingest_p50_ms']:14.0f} {row['ratio']:7.2f}")
    return results
