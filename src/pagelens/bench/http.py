"""`pagelens bench http`: pages/s end to end over HTTP against colpali-engine's batched forward and
seed 001's loop, same weights, same pages, same run.

The server is the real app (uvicorn, in this process) over an Embedder built in memory with
ColQwen2.5-3B layer dimensions (random weights, bf16, cut-down depth as in `bench engine`). Every
page arrives as its own request, all at once, so cross-request batching does the work.
"""

from __future__ import annotations

import base64
import io
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from pagelens.bench.engine import (
    colpali_batched,
    published_colqwen2_5,
    published_processor,
    seed001_loop,
    synthetic_page,
)
from pagelens.testing.servers import uvicorn_in_thread


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def run(*, text_layers: int = 4, vision_layers: int = 4, pages: int = 8) -> dict[str, float]:
    from pagelens.api import create_app
    from pagelens.engine import Engine, EngineConfig
    from pagelens.models import Embedder
    from pagelens.models.families import get_family
    from pagelens.serving import EmbeddingService
    from pagelens.settings import Settings

    images = [synthetic_page(seed) for seed in range(pages)]
    with tempfile.TemporaryDirectory() as scratch:
        processor = published_processor(Path(scratch))
    sdpa = published_colqwen2_5(text_layers, vision_layers, processor, "sdpa")
    eager = published_colqwen2_5(text_layers, vision_layers, processor, "eager")
    eager.load_state_dict(sdpa.state_dict())
    for model in (sdpa, eager):
        colpali_batched(model, processor, images[:1], [], 1)

    started = time.perf_counter()
    seed001_loop(eager, processor, images, [])
    seed001 = pages / (time.perf_counter() - started)
    started = time.perf_counter()
    colpali_batched(sdpa, processor, images, [], 4)
    colpali = pages / (time.perf_counter() - started)

    embedder = Embedder(sdpa, processor, get_family("colqwen2_5"), name="colqwen2.5-3b-dims", attention="sdpa")
    engine = Engine(embedder, EngineConfig.for_device("cpu")).start()
    service = EmbeddingService(engine, embedder.info, max_inputs_per_request=256)
    bodies = [{"input_type": "image", "inputs": [_png_base64(image)]} for image in images]
    latencies: list[float] = []
    try:
        with (
            uvicorn_in_thread(create_app(Settings(model="bench"), service=service)) as url,
            httpx.Client(base_url=url, timeout=600) as client,
        ):

            def one(body):
                sent = time.perf_counter()
                response = client.post("/embeddings", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)

            client.post("/embeddings", json=bodies[0]).raise_for_status()  # warm the route
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=pages) as pool:
                list(pool.map(one, bodies))
            http = pages / (time.perf_counter() - started)
    finally:
        engine.close()

    figures = {
        "seed001_pages_per_s": seed001,
        "colpali_batched_pages_per_s": colpali,
        "http_pages_per_s": http,
        "http_vs_colpali": http / colpali,
        "http_vs_seed001": http / seed001,
        "http_p50_s": statistics.median(latencies),
    }
    print(f"ColQwen2.5-3B dims, {text_layers} text + {vision_layers} vision layers, bf16; {pages} one-page requests")
    print(f"{'configuration':46} {'pages/s':>8}")
    print(f"{'seed 001 loop (eager, batch 1, gc, JSON)':46} {seed001:8.3f}")
    print(f"{'colpali-engine batched (sdpa, batch 4)':46} {colpali:8.3f}")
    print(f"{'pagelens over HTTP (concurrent 1-page requests)':46} {http:8.3f}")
    print(
        f"HTTP / colpali-engine batched: {http / colpali:.2f} (bar >= 0.9); "
        f"HTTP / seed 001: {http / seed001:.2f} (bar >= 1.6)"
    )
    return figures
