"""`pagelens bench http`: the real server end to end against the same baselines as `bench engine`.

The server is the real app under uvicorn on loopback (in this process, over an Embedder built in
memory from bench/models.py: same seeded weights as the baselines). N clients each send one-page
(then one-query) morphik `/embeddings` requests, one at a time, until all are answered, so
cross-request batching does the work. Latency is each request's round trip; the baselines' is as in
`bench engine` (from the burst's start). Bars (issue #4): HTTP pages/s >= 0.9 x colpali-engine's
batched forward and >= 1.6 x seed 001's loop.
"""

from __future__ import annotations

import base64
import gc
import io
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from pagelens.bench.engine import SEED001, Measured, Run, add_rows, baseline_runs, prepare
from pagelens.bench.report import DEFAULT_DOCS, Report, matmul_peak_gflops


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def closed_loop(client: httpx.Client, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    """`clients` threads each POST one body at a time from a shared queue; total seconds and round trips."""
    pending: queue.Queue[dict] = queue.Queue()
    for body in bodies:
        pending.put(body)
    latencies: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            try:
                body = pending.get_nowait()
            except queue.Empty:
                return
            sent = time.perf_counter()
            try:
                client.post("/embeddings", json=body).raise_for_status()
            except BaseException as error:  # surfaced below, in the caller's thread
                errors.append(error)
                return
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(max(1, clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, latencies


def http_run(setup: Any, clients: int) -> Run:
    """Serve `setup`'s Embedder with the real app and measure pages, then queries, over loopback."""
    from pagelens.api import create_app
    from pagelens.service import Runtime
    from pagelens.settings import Settings
    from pagelens.testing.servers import uvicorn_in_thread

    embedder = setup.embedder
    page_bodies = [{"input_type": "image", "inputs": [_png_base64(image)]} for image in setup.images]
    query_bodies = [{"input_type": "text", "inputs": [text]} for text in setup.texts]
    # the engine as `pagelens serve` configures it; no key, as the clients send none
    runtime = Runtime(Settings(model="bench", api_key=None, no_auth=True)).start(embedder)
    run = Run()
    try:
        with (
            uvicorn_in_thread(create_app(runtime=runtime)) as url,
            httpx.Client(base_url=url, timeout=3600, limits=httpx.Limits(max_connections=clients + 1)) as client,
        ):
            client.post("/embeddings", json=query_bodies[0]).raise_for_status()  # warm the route
            run.page_seconds, run.page_latencies = closed_loop(client, page_bodies, clients)
            run.query_seconds, run.query_latencies = closed_loop(client, query_bodies, clients)
    finally:
        runtime.close()
    return run


def run(
    *,
    archs: list[str],
    layers: int | None,
    pages: int,
    queries: int,
    clients: int,
    batch: int = 4,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    """Baselines and the server for each architecture; print, write the JSON and the docs section."""
    report = Report("http", args if args is not None else {"arch": archs, "layers": layers, "clients": clients})
    peaks = [matmul_peak_gflops(torch.bfloat16)]
    report.machine["dtype"] = "bfloat16 (float32 for the naive loop)"
    descriptions, measured = [], []
    colpali_label = f"colpali-engine batched forward (sdpa, batch {batch})"
    for arch_name in archs:
        with tempfile.TemporaryDirectory() as scratch:
            setup = prepare(arch_name, Path(scratch), layers=layers, pages=pages, queries=queries)
            print(f"{arch_name}: {setup.describe()}", flush=True)
            runs = baseline_runs(setup, batch=batch)
            label = f"pagelens over HTTP ({clients} clients, one-item requests)"
            runs[label] = http_run(setup, clients)
            peaks.append(matmul_peak_gflops(torch.bfloat16))
            measured.append(Measured.of(f"{arch_name}, {setup.bench_model.depth}", setup, runs))
            ours = pages / runs[label].page_seconds
            vs_colpali = ours / (pages / runs[colpali_label].page_seconds)
            vs_seed001 = ours / (pages / runs[SEED001].page_seconds)
            report.figures[arch_name] = {
                "text_layers": setup.bench_model.text_layers,
                "vision_layers": setup.bench_model.vision_layers,
                "http_vs_colpali_batched": vs_colpali,
                "http_vs_seed001": vs_seed001,
            }
            report.note(
                f"{arch_name}: HTTP pages/s = {vs_colpali:.2f} x colpali-engine batched (bar >= 0.9) and "
                f"{vs_seed001:.2f} x seed 001's loop (bar >= 1.6)."
            )
            descriptions.append(f"**{arch_name}**: {setup.describe()}.")
            del setup, runs
            gc.collect()
    report.describe(
        " ".join(descriptions) + f" {clients} concurrent HTTP clients (morphik `/embeddings`, npz responses) "
        f"against uvicorn on loopback in this process; torch threads {torch.get_num_threads()}. HTTP latency: "
        "each request's round trip; baselines': from a burst where all items arrive at once to the item's result."
    )
    for table in measured:  # other processes share the cores: the best peak sample is closest to the hardware
        add_rows(report, table, max(peaks), SEED001)
    report.machine.update(bf16_matmul_gflops=max(peaks), bf16_matmul_gflops_samples=peaks)
    return report.finish(json_path, docs_path)
