"""`pagelens bench variants`: speed and quality of the model variants, side by side in one run.

Variants (same random weights, same pages and queries, each served by the Engine over an Embedder):
  float32          eager, sdpa: the quality reference
  bf16             eager, sdpa: the CPU default where the CPU has native bf16
  int8-dynamic     int8 weights (per channel) + dynamically quantized float32 activations in every
                   backbone linear; projection head float32 (`--quantize int8`)
  bf16+compile     regional torch.compile of the repeated blocks, dynamic shapes (`--compile`)
Model: ColQwen2.5-3B's published layer dimensions cut to `text_layers` + `vision_layers` (see
pagelens.bench.engine). Pages are rendered text and tables; quality is each variant's per-vector
cosine to float32 (worst, mean) and how often MaxSim ranks pages for a query as float32 does.
Random weights have no activation outliers: int8's error on a trained checkpoint is larger.
"""

from __future__ import annotations

import gc
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pagelens.bench.engine import engine_concurrent, published_colqwen2_5, published_processor

VARIANTS: dict[str, dict[str, Any]] = {
    "float32": {"dtype": torch.float32},
    "bf16": {"dtype": torch.bfloat16},
    "int8-dynamic": {"dtype": torch.float32, "quantize": "int8"},
    "bf16+compile": {"dtype": torch.bfloat16, "compile": True},
}
REFERENCE = "float32"
WORDS = ["revenue", "profit", "quarter", "division", "total", "growth", "margin", "cost", "segment", "region"]


def text_page(seed: int, width: int = 600, height: int = 800) -> Image.Image:
    """A rendered page: a title, paragraphs of words and a table of figures, deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    title, body = ImageFont.load_default(size=28), ImageFont.load_default(size=14)
    draw.text((40, 30), f"Report {seed}: {' '.join(rng.choice(WORDS, 3))}".title(), fill="black", font=title)
    top = 90
    for _ in range(int(rng.integers(6, 14))):
        draw.text((40, top), " ".join(rng.choice(WORDS, int(rng.integers(6, 11)))), fill=(20, 20, 20), font=body)
        top += 22
    top += 20
    rows, columns = int(rng.integers(3, 7)), 4
    cell_w, cell_h = (width - 80) // columns, 26
    for row in range(rows):
        for column in range(columns):
            x, y = 40 + column * cell_w, top + row * cell_h
            draw.rectangle([x, y, x + cell_w, y + cell_h], outline="black")
            text = str(rng.choice(WORDS)) if row == 0 else f"{rng.uniform(0, 999):.1f}"
            draw.text((x + 6, y + 5), text, fill="black", font=body)
    return page


def queries_for(count: int, seed: int = 0) -> list[str]:
    """`count` short finance-style questions over the pages' vocabulary."""
    rng = np.random.default_rng(seed)
    return [f"What was the {' '.join(rng.choice(WORDS, int(rng.integers(1, 4))))} in {2015 + i}?" for i in range(count)]


def per_vector_cosines(got: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    """Cosine of every output vector with the reference's vector at the same position, all inputs."""
    cosines = []
    for a, b in zip(got, reference, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"shape {a.shape} != reference {b.shape}")
        cosines.append((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12))
    return np.concatenate([np.atleast_1d(c) for c in cosines])


Vectors = list[np.ndarray]


def ranking_agreement(
    queries: Vectors, pages: Vectors, ref_queries: Vectors, ref_pages: Vectors, k: int
) -> tuple[float, float]:
    """(top-1 agreement, mean top-k overlap) of MaxSim page rankings against the reference's, over queries."""
    top1, overlap = [], []
    for query, ref_query in zip(queries, ref_queries, strict=True):
        scores = np.array([(query @ page.T).max(1).sum() for page in pages])
        ref_scores = np.array([(ref_query @ page.T).max(1).sum() for page in ref_pages])
        order, ref_order = np.argsort(-scores), np.argsort(-ref_scores)
        top1.append(order[0] == ref_order[0])
        overlap.append(len(set(order[:k]) & set(ref_order[:k])) / k)
    return float(np.mean(top1)), float(np.mean(overlap))


def run(
    *, text_layers: int, vision_layers: int, pages: int, queries: int, top_k: int = 5, out: Path | None = None
) -> dict:
    """Measure every variant, print a table, write the figures as JSON to `out` and return them."""
    from pagelens.engine import Engine, EngineConfig
    from pagelens.models import Embedder
    from pagelens.models.families import get_family
    from pagelens.models.variants import compiled_graph_count

    images = [text_page(seed) for seed in range(pages)]
    texts = queries_for(queries)
    with tempfile.TemporaryDirectory() as scratch:
        processor = published_processor(Path(scratch))
    tokens_per_page = int(processor.process_images(images[:1])["input_ids"].shape[1])
    print(
        f"ColQwen2.5-3B dims, {text_layers} text + {vision_layers} vision layers, random weights; {pages} rendered "
        f"pages ({tokens_per_page} tokens each), {queries} queries; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    weights = published_colqwen2_5(text_layers, vision_layers, processor, "sdpa").float().state_dict()
    family = get_family("colqwen2_5")
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, tuple[list, list]] = {}
    for name, spec in VARIANTS.items():
        model = published_colqwen2_5(text_layers, vision_layers, processor, "sdpa")
        model.load_state_dict(weights)
        model.to(spec["dtype"])
        graphs, started = compiled_graph_count(), time.perf_counter()
        embedder = Embedder(
            model, processor, family, name=name, attention="sdpa",
            quantize=spec.get("quantize", "none"), compile=spec.get("compile", False),
        )  # fmt: skip
        load_seconds = time.perf_counter() - started
        warm_graphs = compiled_graph_count() - graphs
        with Engine(embedder, EngineConfig.for_backend(embedder)) as engine:
            engine_concurrent(engine, images[:1], texts[:1])  # first-call kernel selection, untimed
            started = time.perf_counter()
            page_vectors, _ = engine_concurrent(engine, images, [])
            page_seconds = time.perf_counter() - started
            started = time.perf_counter()
            _, query_vectors = engine_concurrent(engine, [], texts)
            query_seconds = time.perf_counter() - started
        outputs[name] = (page_vectors, query_vectors)
        results[name] = {
            "pages_per_s": pages / page_seconds,
            "queries_per_s": queries / query_seconds,
            "setup_s": load_seconds,
            "graphs_at_warm_up": warm_graphs,
            "graphs_while_serving": compiled_graph_count() - graphs - warm_graphs,
        }
        print(f"  {name}: {results[name]['pages_per_s']:.3f} pages/s, {results[name]['queries_per_s']:.2f} queries/s")
        del embedder, model, engine
        gc.collect()

    ref_pages, ref_queries = outputs[REFERENCE]
    k = min(top_k, pages)
    for name, (page_vectors, query_vectors) in outputs.items():
        cosines = per_vector_cosines(page_vectors + query_vectors, ref_pages + ref_queries)
        top1, top_k_overlap = ranking_agreement(query_vectors, page_vectors, ref_queries, ref_pages, k)
        results[name] |= {
            "worst_cosine": float(cosines.min()),
            "mean_cosine": float(cosines.mean()),
            "top1_agreement": top1,
            f"top{k}_overlap": top_k_overlap,
        }
    _print_table(results, k)
    figures = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": f"ColQwen2.5-3B dims, {text_layers} text + {vision_layers} vision layers, random weights",
        "pages": pages,
        "queries": queries,
        "tokens_per_page": tokens_per_page,
        "reference": REFERENCE,
        "variants": results,
    }
    out = out or Path("bench-results/variants.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"wrote {out}")
    return figures


def _print_table(results: dict[str, dict[str, Any]], k: int) -> None:
    base = results["bf16"]
    print(
        f"\n{'variant':14} {'pages/s':>8} {'x bf16':>7} {'queries/s':>10} {'x bf16':>7} {'setup s':>8} "
        f"{'worst cos':>10} {'mean cos':>9} {'top-1':>6} {f'top-{k}':>6} {'graphs':>7}"
    )
    for name, row in results.items():
        graphs = f"{row['graphs_at_warm_up']}+{row['graphs_while_serving']}"
        print(
            f"{name:14} {row['pages_per_s']:8.3f} {row['pages_per_s'] / base['pages_per_s']:7.2f} "
            f"{row['queries_per_s']:10.2f} {row['queries_per_s'] / base['queries_per_s']:7.2f} {row['setup_s']:8.1f} "
            f"{row['worst_cosine']:10.5f} {row['mean_cosine']:9.6f} {row['top1_agreement']:6.2f} "
            f"{row[f'top{k}_overlap']:6.2f} {graphs:>7}"
        )
    print("graphs: compiled at warm-up + compiled while serving (recompiles; 0 is the goal)")
