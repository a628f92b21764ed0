"""`pagelens bench gpu` (`make bench-gpu`): `bench engine` and `bench http` at published depth on a
CUDA GPU, in one run, one table.

For each architecture (ColQwen2.5-3B and ColModernVBert at full depth, random weights: see
bench/models.py), the models are built on the GPU in bfloat16 with FlashAttention 2 when flash-attn
is installed and the model supports it (else sdpa; `attention` in the JSON says which), one at a
time so that the float32 baseline never shares the GPU with the others. Rows, per architecture:
  seed 001 loop        bf16, eager, batch 1, empty_cache + gc after every batch, JSON lists
  naive float32 loop   float32, batch 1
  colpali-engine       its batched forward (`--batch`), same attention as ours
  pagelens engine      concurrent one-item calls; GPU defaults (pages batched up to 8; host tensors
                       pinned and copied non-blocking: models/embedder.py)
  pagelens over HTTP   the real server on loopback, `--clients` concurrent one-item requests
MFU is counted forward FLOPs x rate over the bf16 matmul peak measured on the same GPU.

Budget (8 minutes): a ColQwen2.5-3B page is ~8 TFLOP at full depth (docs/scale.md), so an L40S
(362 dense bf16 TFLOP/s) at 13-35% MFU embeds 6-16 pages/s; 32 pages through five configurations
is well under a minute of forward passes per architecture, plus model builds on the GPU (seconds)
and CUDA start-up: a run is about 2-3 minutes. The total is printed and kept in the JSON
(`seconds`, and `figures.within_budget` against `budget_seconds`).

`--dry-run` takes the same path on the CPU with the tiny architecture and two pages: it checks that
the command works (tests/test_bench_gpu.py), not how fast anything is.
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pagelens.bench.engine import (
    FLOAT32,
    SEED001,
    Run,
    engine_run,
    plain_forward,
    seed001_forward,
    timed_loop,
    worst_cosine,
)
from pagelens.bench.models import BenchModel, forward_flops, get_arch, synthetic_page
from pagelens.bench.report import Report, matmul_peak_gflops
from pagelens.errors import InvalidInput

BUDGET_SECONDS = 480
GPU_ARCHS = ("colqwen2.5-3b", "colmodernvbert")
DRY_RUN_ARCH = "tiny-colqwen2.5"


@dataclass
class DeviceSetup:
    """One architecture on the device: what `engine_run` and `http_run` need, plus the row figures."""

    arch: str
    images: list
    texts: list[str]
    embedder: Any
    attention: str
    page_flops: float
    tokens_per_page: int
    depth: str
    runs: dict[str, Run] = field(default_factory=dict)


def best_attention(bench_model: BenchModel, device: torch.device) -> str:
    """FlashAttention 2 on CUDA when flash-attn is installed and the model supports it, else sdpa
    (also in the CPU dry run: colpali-engine's rows run the attention it would, so no cpu_blocked)."""
    from pagelens.models.hardware import attention_candidates

    model_class, _ = bench_model.arch.family_spec.classes()
    candidates = attention_candidates("auto", device, torch.bfloat16, model_class)
    return next(name for name in candidates if name not in ("cpu_blocked", "eager"))


def device_peak_gflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Dense bf16 `size`^3 matmul throughput on `device` (the MFU denominator); on the CPU, the CPU bench's."""
    if device.type != "cuda":
        return matmul_peak_gflops(torch.bfloat16)
    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        torch.matmul(a, b)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def _model(bench_model: BenchModel, attention: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A fresh model initialised on `device` (a 3B random init on the GPU takes seconds, on the CPU minutes)."""
    with torch.device(device):
        return bench_model.model(attention, dtype)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(
    arch_name: str, scratch: Path, device: torch.device, *, layers: int | None, pages: int, queries: int, batch: int,
    clients: int,
) -> DeviceSetup:  # fmt: skip
    """Every configuration of one architecture on `device`, one model on the device at a time."""
    from pagelens.bench.http import http_run
    from pagelens.engine import EngineConfig
    from pagelens.models import Embedder

    bench_model = get_arch(arch_name).build(scratch, layers)
    processor = bench_model.processor
    images = [synthetic_page(seed) for seed in range(pages)]
    texts = [f"What was the revenue of division {i} in the third quarter of 2023?" for i in range(queries)]
    one_page = processor.process_images(images[:1])
    runs: dict[str, Run] = {}

    eager = _model(bench_model, "eager", torch.bfloat16, device)
    page_flops = forward_flops(eager, one_page.to(device))  # eager: attention as counted matmuls; a warm-up too
    runs[SEED001] = _baseline(eager, processor, images, texts, (1, 4), seed001_forward)
    del eager
    _free(device)
    float32 = _model(bench_model, "sdpa", torch.float32, device)
    with torch.inference_mode():
        float32(**one_page.to(device))  # kernel selection before timing
    runs[FLOAT32] = _baseline(float32, processor, images, texts, (1, 1), plain_forward)
    del float32
    _free(device)

    attention = best_attention(bench_model, device)
    try:
        model = _model(bench_model, attention, torch.bfloat16, device)
    except (ImportError, ValueError) as error:  # flash-attn installed, but this GPU is older than Ampere
        print(f"  {attention} unavailable ({error}); sdpa instead", flush=True)
        attention = "sdpa"
        model = _model(bench_model, attention, torch.bfloat16, device)
    with torch.inference_mode():
        model(**one_page.to(device))
    runs[f"colpali-engine batched forward ({attention}, batch {batch})"] = _baseline(
        model, processor, images, texts, (batch, batch), plain_forward
    )
    embedder = Embedder(model, processor, bench_model.arch.family_spec, name=arch_name, attention=attention)
    setup = DeviceSetup(arch_name, images, texts, embedder, attention, page_flops, int(one_page["input_ids"].shape[1]),
                        bench_model.depth)  # fmt: skip
    config = EngineConfig.for_device(device.type)
    runs[f"pagelens engine ({attention}, batches of up to {config.max_batch_images} pages)"] = engine_run(setup, config)
    runs[f"pagelens over HTTP ({clients} clients, one-item requests)"] = http_run(setup, clients)
    setup.runs = runs
    return setup


def _baseline(model, processor, images, texts, batches: tuple[int, int], make) -> Run:
    run = Run()
    run.record("page", *timed_loop(images, batches[0], make(model, processor.process_images)))
    run.record("query", *timed_loop(texts, batches[1], make(model, processor.process_queries)))
    return run


def rows(setup: DeviceSetup, peak: float) -> list[dict[str, Any]]:
    """One row per configuration: rates, ratio to colpali-engine batched, latencies, MFU."""
    pages, queries = len(setup.images), len(setup.texts)
    colpali = next(run for label, run in setup.runs.items() if label.startswith("colpali-engine"))
    table = []
    for label, run in setup.runs.items():
        pages_per_s = pages / run.page_seconds
        table.append({
            "architecture": setup.arch,
            "configuration": label,
            "pages/s": pages_per_s,
            "x colpali-engine": pages_per_s / (pages / colpali.page_seconds),
            "page p50 s": float(np.percentile(run.page_latencies, 50)),
            "page p95 s": float(np.percentile(run.page_latencies, 95)),
            "MFU %": 100 * pages_per_s * setup.page_flops / (peak * 1e9),
            "queries/s": queries / run.query_seconds,
            "query p50 ms": 1000 * float(np.percentile(run.query_latencies, 50)),
        })  # fmt: skip
    return table


def run(
    *,
    device: str = "cuda",
    dry_run: bool = False,
    archs: list[str] | None = None,
    pages: int = 32,
    queries: int = 64,
    batch: int = 8,
    clients: int = 16,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = None,
) -> dict[str, Any]:
    """Measure every architecture on `device` at full depth (the dry run: the tiny one on the CPU)."""
    if dry_run:
        device, archs, pages, queries, batch, clients = "cpu", [DRY_RUN_ARCH], 2, 2, 2, 2
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"--device {device}: torch sees no CUDA device here; run on a GPU, or --dry-run")
    archs = list(archs or GPU_ARCHS)
    started = time.perf_counter()
    report = Report("gpu", args if args is not None else {"device": device, "dry_run": dry_run, "arch": archs})
    report.machine.update(device=str(torch_device), dtype="bfloat16 (float32 for the naive loop)")
    peak = device_peak_gflops(torch_device)
    report.machine["bf16_matmul_gflops"] = peak
    descriptions = []
    for arch_name in archs:
        with tempfile.TemporaryDirectory() as scratch:
            setup = measure(arch_name, Path(scratch), torch_device, layers=None, pages=pages, queries=queries,
                            batch=batch, clients=clients)  # fmt: skip
            for row in rows(setup, peak):
                report.add_row(row)
            engine_label = next(label for label in setup.runs if label.startswith("pagelens engine"))
            report.figures[arch_name] = {
                "attention": setup.attention,
                "depth": setup.depth,
                "tokens_per_page": setup.tokens_per_page,
                "page_gflops": setup.page_flops / 1e9,
                "worst_cosine_bf16_vs_float32": worst_cosine(
                    setup.runs[FLOAT32].page_vectors, setup.runs[engine_label].page_vectors
                ),
            }
            descriptions.append(f"**{arch_name}** ({setup.depth}, {setup.attention}, {setup.tokens_per_page} "
                                f"tokens and {setup.page_flops / 1e12:.3g} TFLOP per page)")  # fmt: skip
            del setup
            _free(torch_device)
    seconds = time.perf_counter() - started
    report.figures.update(budget_seconds=BUDGET_SECONDS, within_budget=seconds <= BUDGET_SECONDS)
    report.describe(
        f"{'DRY RUN (CPU, tiny model: checks the command, measures nothing). ' if dry_run else ''}"
        f"{', '.join(descriptions)} on {report.machine.get('cuda') or 'the CPU'}; {pages} pages of 600x800 and "
        f"{queries} queries per configuration; colpali-engine batch {batch}; {clients} HTTP clients."
    )
    report.note(f"whole run {seconds:.0f} s (budget {BUDGET_SECONDS} s)")
    return report.finish(json_path, None if dry_run else docs_path)
