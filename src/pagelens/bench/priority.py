"""`pagelens bench priority`: query latency while pages are being ingested, against idle.

An architecture of bench/models.py (default ColQwen2.5-3B dimensions, random weights, bf16). For
each engine mode, the p50 of single queries is measured idle, then while a background thread keeps
the page lane busy. Bar (issue #4): p50 during ingest <= 2 x idle p50.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from pagelens.bench.models import get_arch, synthetic_page
from pagelens.bench.report import DEFAULT_DOCS, Report


def _query_latencies(engine, count: int) -> list[float]:
    latencies = []
    for number in range(count):
        started = time.perf_counter()
        engine.embed_queries([f"what is the revenue of segment {number}?"])
        latencies.append(time.perf_counter() - started)
    return latencies


def run(
    *,
    arch: str = "colqwen2.5-3b",
    layers: int | None = 4,
    queries: int = 8,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    from pagelens.engine import Engine, EngineConfig
    from pagelens.models import Embedder

    report = Report("priority", args if args is not None else {"arch": arch, "layers": layers, "queries": queries})
    with tempfile.TemporaryDirectory() as scratch:
        bench_model = get_arch(arch).build(Path(scratch), layers)
    model = bench_model.model("sdpa", torch.bfloat16)
    embedder = Embedder(model, bench_model.processor, bench_model.arch.family_spec, name=arch, attention="sdpa")
    report.machine["dtype"] = "bfloat16"
    report.describe(
        f"{bench_model.arch.dims}; {bench_model.depth}, random weights, bf16; {queries} single queries idle, "
        f"then {queries} while a background thread keeps sending 2-page batches (600x800); "
        f"torch threads {torch.get_num_threads()}."
    )
    page = synthetic_page(0)
    for label, query_worker in (("queries on their own forward thread (default)", True),
                                ("one worker, queries first", False)):  # fmt: skip
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
        report.add_row(
            {
                "engine mode": label,
                "idle p50 ms": idle * 1000,
                "during ingest p50 ms": busy * 1000,
                "ratio": busy / idle,
            }
        )
    ratio = report.tables[""][0]["ratio"]
    report.figures["default_mode_ratio"] = ratio
    report.note(f"default mode: query p50 during ingest = {ratio:.2f} x idle (bar, issue #4: <= 2).")
    return report.finish(json_path, docs_path)
