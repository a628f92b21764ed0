"""`pagelens bench ingest`: a PDF ingested end to end (render + embed + store) against the engine
alone on the same pages already rendered, per architecture.

For each architecture of bench/models.py (random weights, bf16, sdpa): a PDF of `pages` synthetic
600x800 pages (text lines and a table box, at 100 dpi) is
  engine alone   rendered first (not timed) as an ingest renders them (within the model's page
                 pixel budget), then embedded by the engine in batches of 8 pages, as an ingest
                 sends them;
  ingest         `Collection.add` into a fresh Qdrant Edge collection: rendering in the PDF worker
                 processes (the next batch while the current one embeds), embedding, and storing
                 (each page's rows and centroids in the vector files, its payload in the shard).
The two alternate, `rounds` times each, in one process (this VM's speed drifts: see
docs/benchmarks.md); pages/s is each configuration's median. Bar (issue #14): ingest >= 0.85x the
engine alone.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pagelens.bench.models import get_arch, synthetic_page
from pagelens.bench.report import DEFAULT_DOCS, Report, matmul_peak_gflops

BAR = 0.85
PDF_DPI = 100  # 600x800-pixel pages from 6x8-inch PDF pages
BATCH_PAGES = 8  # what an ingest renders and embeds at a time (index/pdf.py DEFAULT_BATCH_PAGES)


def synthetic_pdf(pages: int) -> bytes:
    """A PDF of `pages` distinct 600x800 synthetic pages at 100 dpi (deterministic bytes)."""
    images = [synthetic_page(seed) for seed in range(pages)]
    buffer = io.BytesIO()
    fixed = time.strptime("2026-01-01", "%Y-%m-%d")
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=PDF_DPI,
                   creationDate=fixed, modDate=fixed)  # fmt: skip
    return buffer.getvalue()


def engine_alone(engine, images: list) -> float:
    """Seconds for the engine to embed `images`, BATCH_PAGES at a time (one caller, as an ingest)."""
    started = time.perf_counter()
    for first in range(0, len(images), BATCH_PAGES):
        engine.embed_images(images[first : first + BATCH_PAGES])
    return time.perf_counter() - started


def ingest(engine, data: bytes, scratch: Path, round_number: int, render_pixels: int | None, renderer) -> float:
    """Seconds for `Collection.add` of the PDF into a fresh Edge collection (pages with their patch
    layouts, as the service ingests them), rendered by `renderer`: a server's render pool, whose
    workers outlive any one upload."""
    from pagelens.index.collections import Collections

    collections = Collections(scratch / f"data-{round_number}", renderer=renderer)
    try:
        collection = collections.create("bench")
        started = time.perf_counter()
        record = collection.add(data, name="bench.pdf", metadata={}, embed=engine.embed_pages, dpi=PDF_DPI,
                                render_pixels=render_pixels)  # fmt: skip
        elapsed = time.perf_counter() - started
        assert record["created"] and record["pages"] > 0
        return elapsed
    finally:
        collections.close()


def run(
    *,
    archs: list[str],
    layers: int | None = 2,
    pages: int = 100,
    rounds: int = 2,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    from pagelens.engine import Engine, EngineConfig
    from pagelens.index.pdf import DEFAULT_MAX_IMAGE_PIXELS, open_document, render_pages
    from pagelens.index.render_pool import BACKGROUND_NICENESS, RenderPool
    from pagelens.models import Embedder

    report = Report("ingest", args if args is not None else {"arch": archs, "layers": layers, "pages": pages})
    report.machine["bf16_matmul_gflops"] = matmul_peak_gflops(torch.bfloat16)
    report.describe(
        f"A {pages}-page PDF (600x800 synthetic pages at {PDF_DPI} dpi), {rounds} alternating rounds; "
        f"random weights, bf16, the engine's CPU defaults (its attention too); "
        f"torch threads {torch.get_num_threads()}."
    )
    data = synthetic_pdf(pages)
    with tempfile.TemporaryDirectory() as scratch:
        for name in archs:
            bench_model = get_arch(name).build(Path(scratch) / name, layers)
            attention = bench_model.cpu_default_attention
            model = bench_model.model(attention, torch.bfloat16)
            embedder = Embedder(model, bench_model.processor, bench_model.arch.family_spec, name=name,
                                attention=attention)  # fmt: skip
            budget = embedder.info.page_pixels
            rendered = render_pages(data, dpi=PDF_DPI, max_pixels=budget or DEFAULT_MAX_IMAGE_PIXELS)
            images = [page for batch in rendered for page in batch]
            alone, ingested = [], []
            with (
                Engine(embedder, EngineConfig.for_backend(embedder)) as engine,
                RenderPool(niceness=BACKGROUND_NICENESS) as renderer,  # a collection's pool, as a server has
            ):
                engine.embed_images(images[:1])  # warm up
                with open_document(data, renderer=renderer) as document:  # start its workers, untimed
                    document.page_image(1, dpi=PDF_DPI)
                for number in range(rounds):
                    alone.append(engine_alone(engine, images))
                    ingested.append(ingest(engine, data, Path(scratch) / name, number, budget, renderer))
            engine_rate, ingest_rate = pages / statistics.median(alone), pages / statistics.median(ingested)
            ratio = ingest_rate / engine_rate
            report.add_row({
                "architecture": f"{bench_model.arch.name} ({bench_model.depth})",
                "page pixels": f"{images[0].width}x{images[0].height}",
                "engine alone pages/s": engine_rate,
                "ingest pages/s": ingest_rate,
                "ingest / engine": ratio,
                "rounds (s), engine": " ".join(f"{s:.1f}" for s in alone),
                "rounds (s), ingest": " ".join(f"{s:.1f}" for s in ingested),
            })  # fmt: skip
            report.figures[f"{name}_ratio"] = ratio
            report.note(f"{name}: ingest = {ratio:.2f} x the engine alone (bar, issue #14: >= {BAR}).")
    return report.finish(json_path, docs_path)
