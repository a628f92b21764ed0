"""`pagelens bench engine`: the engine against seed 001's loop and colpali-engine's batched
forward, in one run, on ColQwen2.5-3B's published dimensions with random weights.

Same weights, same pages, same queries for every configuration. What differs:
  seed001      bf16, eager attention, batch 1 (images) / 4 (queries), gc.collect (+ empty_cache on
               CUDA) after every batch, outputs converted to JSON lists: the loop seed 001 runs.
  colpali      colpali-engine's own batched forward (processor on the whole batch), sdpa, bf16.
  pagelens     the Engine over the Embedder (per-item preprocessing on its own thread, batching by
               count and token budget, queries in their own lane), sdpa, bf16, numpy outputs.
Layers are cut down (published: 36 text, 32 vision) to keep the run short; the per-layer cost is
the published one, so ratios hold. A parity line compares pagelens' vectors with the seed 001
loop's (cosine per vector; eager vs sdpa in bf16 differ by rounding only).
"""

from __future__ import annotations

import gc
import json
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

PUBLISHED_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 128000,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
PUBLISHED_VISION = {
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "hidden_act": "silu",
    "in_chans": 3,
    "tokens_per_second": 2,
}
PUBLISHED_MIN_PIXELS, PUBLISHED_MAX_PIXELS = 3136, 602112  # 4 to 768 visual tokens


def synthetic_page(seed: int, width: int = 600, height: int = 800) -> Image.Image:
    """A page-like image: white with lines of dark 'text' and a boxed 'table'."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for line in range(height // 30):
        top = 20 + line * 30
        draw.rectangle([30, top, 30 + int(rng.integers(100, width - 60)), top + 10], fill=(30, 30, 30))
    draw.rectangle([60, height // 2, width - 60, height // 2 + 150], outline=(0, 0, 0), width=2)
    return page


def published_colqwen2_5(text_layers: int, vision_layers: int, processor: Any, attention: str) -> torch.nn.Module:
    """A random-weight ColQwen2.5 with the published layer dimensions, `text_layers` + `vision_layers` deep."""
    from colpali_engine.models import ColQwen2_5
    from transformers import Qwen2_5_VLConfig

    tokenizer = processor.tokenizer
    fullatt = [i for i in (7, 15, 23, 31) if i < vision_layers] or [vision_layers - 1]
    config = Qwen2_5_VLConfig(
        text_config={**PUBLISHED_TEXT, "num_hidden_layers": text_layers},
        vision_config={**PUBLISHED_VISION, "depth": vision_layers, "fullatt_block_indexes": fullatt},
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        architectures=["ColQwen2_5"],
    )
    config._attn_implementation = attention
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = ColQwen2_5(config)
    return model.to(torch.bfloat16).eval()


def published_processor(scratch: Path) -> Any:
    """ColQwen2.5's real processor class with the published pixel bounds (tiny tokenizer)."""
    from colpali_engine.models import ColQwen2_5_Processor

    from pagelens.testing import build_tiny_checkpoint

    directory = build_tiny_checkpoint("colqwen2_5", scratch / "processor")
    processor = ColQwen2_5_Processor.from_pretrained(directory)
    processor.image_processor.size = {"shortest_edge": PUBLISHED_MIN_PIXELS, "longest_edge": PUBLISHED_MAX_PIXELS}
    return processor


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10, trials: int = 3) -> float:
    """Measured dense matmul throughput in this process, best of `trials` (the MFU denominator)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best / 1e9


def seed001_loop(model: torch.nn.Module, processor: Any, images: list, texts: list[str]) -> tuple[list, list]:
    """Seed 001's service loop: batch 1 for images, 4 for texts, gc after every batch, JSON lists."""

    def run(items: list, batch_size: int, process: Callable) -> list:
        results: list = []
        for start in range(0, len(items), batch_size):
            batch = process(items[start : start + batch_size]).to(model.device)
            with torch.no_grad():
                output = model(**batch)
            results.extend(output.to(torch.float32).cpu().numpy().tolist())
            del output, batch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            gc.collect()
        return results

    return run(images, 1, processor.process_images), run(texts, 4, processor.process_queries)


def colpali_batched(model: torch.nn.Module, processor: Any, images: list, texts: list[str], batch: int) -> None:
    """colpali-engine's documented usage: the processor on a whole batch, one forward per batch."""
    for items, process in ((images, processor.process_images), (texts, processor.process_queries)):
        for start in range(0, len(items), batch):
            inputs = process(items[start : start + batch])
            with torch.inference_mode():
                model(**inputs).float().cpu().numpy()


def engine_concurrent(engine: Any, images: list, texts: list[str]) -> tuple[list, list]:
    """Every page and query arrives as its own request, concurrently (cross-request batching)."""
    with ThreadPoolExecutor(max_workers=len(images) + len(texts)) as pool:
        image_futures = [pool.submit(engine.embed_images, [image]) for image in images]
        query_futures = [pool.submit(engine.embed_queries, [text]) for text in texts]
        return [f.result()[0] for f in image_futures], [f.result()[0] for f in query_futures]


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def _timed_kinds(function: Callable[[list, list], Any], images: list, texts: list[str]) -> tuple[float, float]:
    image_seconds, _ = _timed(lambda: function(images, []))
    query_seconds, _ = _timed(lambda: function([], texts))
    return image_seconds, query_seconds


def run(*, text_layers: int, vision_layers: int, pages: int, queries: int, out: Path | None = None) -> dict:
    """Run every configuration, print a table, and return (and optionally write) the figures."""
    from pagelens.engine import Engine, EngineConfig
    from pagelens.models import Embedder
    from pagelens.models.families import get_family

    images = [synthetic_page(seed) for seed in range(pages)]
    texts = [f"What was the revenue of division {i} in the third quarter of 2023?" for i in range(queries)]
    with tempfile.TemporaryDirectory() as scratch:
        processor = published_processor(Path(scratch))
    tokens_per_page = int(processor.process_images(images[:1])["input_ids"].shape[1])
    peak = matmul_peak_gflops(torch.bfloat16)
    print(
        f"ColQwen2.5-3B dims, {text_layers} text + {vision_layers} vision layers, random weights, bf16; "
        f"{pages} pages of 600x800 ({tokens_per_page} tokens each), {queries} queries; "
        f"torch threads {torch.get_num_threads()}; bf16 matmul peak {peak:.0f} GFLOP/s"
    )

    sdpa = published_colqwen2_5(text_layers, vision_layers, processor, "sdpa")
    eager = published_colqwen2_5(text_layers, vision_layers, processor, "eager")
    eager.load_state_dict(sdpa.state_dict())
    for model in (sdpa, eager):  # first-call costs (kernel selection) are paid before any timing
        colpali_batched(model, processor, images[:1], texts[:1], 1)
    embedder = Embedder(sdpa, processor, get_family("colqwen2_5"), name="colqwen2.5-3b-dims", attention="sdpa")

    rows: dict[str, tuple[float, float]] = {}
    seed001_outputs: list = []

    def seed001(images_: list, texts_: list[str]) -> None:
        page_lists, _ = seed001_loop(eager, processor, images_, texts_)
        if page_lists:
            seed001_outputs.extend(page_lists)

    rows["seed001 loop (eager, batch 1, gc, JSON)"] = _timed_kinds(seed001, images, texts)
    rows["colpali-engine batched (sdpa, batch 4)"] = _timed_kinds(
        lambda i, t: colpali_batched(sdpa, processor, i, t, 4), images, texts
    )
    engine_vectors: list = []
    for label, config in (
        ("pagelens engine (sdpa, images batch 1)", EngineConfig(max_batch_images=1)),
        ("pagelens engine (sdpa, images batch 4)", EngineConfig(max_batch_images=4)),
    ):
        with Engine(embedder, config) as engine:

            def concurrent(images_: list, texts_: list[str], engine: Any = engine) -> None:
                page_vectors, _ = engine_concurrent(engine, images_, texts_)
                if page_vectors and not engine_vectors:
                    engine_vectors.extend(page_vectors)

            rows[label] = _timed_kinds(concurrent, images, texts)

    baseline_pages = pages / rows["seed001 loop (eager, batch 1, gc, JSON)"][0]
    baseline_queries = queries / rows["seed001 loop (eager, batch 1, gc, JSON)"][1]
    page_flops = _forward_flops(sdpa, processor, images[0])
    figures: dict[str, Any] = {"machine": _machine(peak), "tokens_per_page": tokens_per_page, "rows": {}}
    print(f"\n{'configuration':44} {'pages/s':>8} {'x seed001':>9} {'MFU':>6} {'queries/s':>10} {'x seed001':>9}")
    for label, (image_seconds, query_seconds) in rows.items():
        pages_per_s, queries_per_s = pages / image_seconds, queries / query_seconds
        mfu = pages_per_s * page_flops / (peak * 1e9)
        figures["rows"][label] = {"pages_per_s": pages_per_s, "queries_per_s": queries_per_s, "mfu": mfu}
        print(
            f"{label:44} {pages_per_s:8.3f} {pages_per_s / baseline_pages:9.2f} {mfu:6.1%} "
            f"{queries_per_s:10.2f} {queries_per_s / baseline_queries:9.2f}"
        )
    worst = _worst_cosine(seed001_outputs, engine_vectors)
    figures["worst_cosine_vs_seed001"] = worst
    print(f"\nparity: worst per-vector cosine, pagelens (sdpa) vs seed001 loop (eager), bf16: {worst:.5f}")
    worst_fp32 = _worst_cosine_vs_float32(sdpa, processor, images[:2], texts[:4], embedder)
    figures["worst_cosine_bf16_vs_float32"] = worst_fp32
    print(f"parity: worst per-vector cosine, pagelens bf16 vs the same weights in float32: {worst_fp32:.5f}")
    if out is not None:
        out.write_text(json.dumps(figures, indent=2))
        print(f"wrote {out}")
    return figures


def _forward_flops(model: torch.nn.Module, processor: Any, image: Image.Image) -> float:
    """Approximate FLOPs of one page: 2 x parameters touched per token (vision + text)."""
    inputs = processor.process_images([image])
    text_tokens = int(inputs["input_ids"].shape[1])
    vision_patches = int(inputs["image_grid_thw"].prod())
    vision_params = sum(p.numel() for p in model.visual.parameters())
    text_params = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n and "embed_tokens" not in n)
    return 2.0 * (vision_params * vision_patches + text_params * text_tokens)


def _worst_cosine(reference_lists: list, vectors: list) -> float:
    worst = 1.0
    for reference, got in zip(reference_lists, vectors, strict=False):
        reference_array = np.asarray(reference, dtype=np.float32)
        reference_array = reference_array[np.linalg.norm(reference_array, axis=1) > 0]
        if reference_array.shape != got.shape:
            return float("nan")
        cosine = (reference_array * got).sum(1) / (
            np.linalg.norm(reference_array, axis=1) * np.linalg.norm(got, axis=1)
        )
        worst = min(worst, float(cosine.min()))
    return worst


def _worst_cosine_vs_float32(model: torch.nn.Module, processor: Any, images: list, texts: list[str], embedder) -> float:
    """Worst per-vector cosine between bf16 outputs (pagelens) and float32 outputs of the same weights."""
    prepared = [embedder.prepare_image(image) for image in images] + [embedder.prepare_query(t) for t in texts]
    bf16 = [embedder.forward(embedder.collate([item]))[0] for item in prepared]
    model.float()
    embedder.dtype = torch.float32
    try:
        fp32 = [embedder.forward(embedder.collate([item]))[0] for item in prepared]
    finally:
        model.to(torch.bfloat16)
        embedder.dtype = torch.bfloat16
    worst = 1.0
    for low, full in zip(bf16, fp32, strict=True):
        cosine = (low * full).sum(-1) / (np.linalg.norm(low, axis=-1) * np.linalg.norm(full, axis=-1))
        worst = min(worst, float(np.min(cosine)))
    return worst


def _machine(peak: float) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_matmul_gflops": peak,
    }
