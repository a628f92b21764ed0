"""`pagelens bench engine`: the engine against the loops people run by hand, in one run, per architecture.

Same seeded random weights, same pages, same queries for every configuration (see bench/models.py):
  seed 001 loop   bf16, eager attention, batch 1 (images) / 4 (queries), gc.collect (+ empty_cache on
                  CUDA) after every batch, outputs converted to JSON lists: the loop seed 001 runs.
  naive float32   float32 weights, sdpa, batch 1, torch.no_grad, numpy outputs.
  colpali-engine  its own batched forward (the processor on the whole batch), sdpa, bf16.
  pagelens        the Engine over the Embedder; every page and query is its own concurrent call, so
                  cross-request batching does the work; bf16, numpy outputs, and the attention the
                  Embedder picks on a CPU in bf16 (cpu_blocked: models/cpu_attention.py).
Latency is per item from the moment all of them arrive (a burst) to its result. Queries, which take
milliseconds, run once untimed (each configuration's first call with a shape pays kernel selection)
and then QUERY_ROUNDS timed rounds, the median round reported; the two loops' pages run once. The
compared pair, colpali-engine and pagelens, take turns (`alternating`): PAGE_ROUNDS rounds of pages,
then the query rounds, the order reversed every round, so the cores' drift cannot favour either. MFU is the FLOPs a
page's vectors need (counted by torch's FlopCounterMode on one page, with the family's forward
options: ColPali's logits at one position, where colpali-engine's call computes them at all ~1030,
a vocabulary of 257k) x pages/s over the bf16 matmul peak measured in the same run. Parity: worst
per-vector cosine of pagelens' bf16 vectors against the float32 loop's (same weights) and against
the seed 001 loop's (eager); see `parity_figures`.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pagelens.bench.models import BenchModel, forward_flops, get_arch, synthetic_page
from pagelens.bench.report import DEFAULT_DOCS, Report, matmul_peak_gflops

SEED001 = "seed 001 loop (bf16, eager, batch 1, gc, JSON lists)"
FLOAT32 = "naive float32 loop (sdpa, batch 1)"
ENGINE = "pagelens engine (concurrent one-item calls, CPU default attention and config)"
QUERY_ROUNDS = 3  # timed rounds of the query burst, after one untimed
PAGE_ROUNDS = 3  # timed rounds of the pages for colpali-engine batched and the engine (alternating)
Timing = tuple[float, list[float], list]  # total seconds, per-item latencies, outputs
Measure = Callable[[], Timing]


@dataclass
class Run:
    """One configuration's timings, per-item latencies (seconds) and output vectors."""

    page_seconds: float = 0.0
    query_seconds: float = 0.0
    page_latencies: list[float] = field(default_factory=list)
    query_latencies: list[float] = field(default_factory=list)
    page_vectors: list[np.ndarray] = field(default_factory=list)
    query_vectors: list[np.ndarray] = field(default_factory=list)

    def record(self, kind: str, seconds: float, latencies: list[float], vectors: list[np.ndarray]) -> None:
        setattr(self, f"{kind}_seconds", seconds)
        setattr(self, f"{kind}_latencies", latencies)
        setattr(self, f"{kind}_vectors", vectors)


@dataclass
class Setup:
    """One architecture ready to measure: workload, the three models, the engine's Embedder, FLOPs."""

    bench_model: BenchModel
    images: list
    texts: list[str]
    sdpa: torch.nn.Module
    eager: torch.nn.Module
    float32: torch.nn.Module
    embedder: Any
    page_flops: float  # what the vectors need
    page_flops_as_called: float  # what colpali-engine's documented call computes (ColPali: logits at every position)
    query_flops: float
    tokens_per_page: int

    @property
    def processor(self) -> Any:
        return self.bench_model.processor

    @property
    def _as_called(self) -> str:
        if self.page_flops_as_called == self.page_flops:
            return ""
        return f"; {self.page_flops_as_called / 1e9:.3g} GFLOP as colpali-engine's call computes it"

    def describe(self) -> str:
        arch = self.bench_model.arch
        return (
            f"{arch.dims}; {self.bench_model.depth}, random weights; {len(self.images)} pages of 600x800 "
            f"({self.tokens_per_page} tokens each, {self.page_flops / 1e9:.3g} GFLOP per page{self._as_called}), "
            f"{len(self.texts)} queries"
        )


def needed_inputs(features: Any) -> dict[str, torch.Tensor]:
    """A processor's output as the engine passes it: without the `labels` PaliGemma's processor adds."""
    return {key: value for key, value in dict(features).items() if key != "labels"}


def prepare(arch_name: str, scratch: Path, *, layers: int | None, pages: int, queries: int) -> Setup:
    """Build the models of `arch_name` (bf16 sdpa + eager, float32) and pay first-call costs untimed."""
    from pagelens.models import Embedder

    bench_model = get_arch(arch_name).build(scratch, layers)
    processor = bench_model.processor
    images = [synthetic_page(seed) for seed in range(pages)]
    texts = [f"What was the revenue of division {i} in the third quarter of 2023?" for i in range(queries)]
    sdpa, eager = bench_model.model("sdpa"), bench_model.model("eager")
    float32 = bench_model.model("sdpa", torch.float32)
    one_page = processor.process_images(images[:1])
    # The work the vectors need, counted on eager (attention as counted matmuls; also its warm-up): the inputs
    # the engine passes (no PaliGemma `labels`, which make the model add a loss) with the family's forward
    # options (ColPali: logits at one position). colpali-engine's documented call may compute more (as_called).
    page_flops = forward_flops(eager, needed_inputs(one_page), **bench_model.arch.family_spec.forward_kwargs)
    page_flops_as_called = forward_flops(eager, one_page) if "labels" in one_page else page_flops
    query_flops = forward_flops(
        eager, needed_inputs(processor.process_queries(texts[:1])), **bench_model.arch.family_spec.forward_kwargs
    )
    engine_model, engine_attention = engine_default_model(bench_model, like=sdpa)
    for model in (sdpa, float32, engine_model):  # kernel selection for these shapes happens before any timing
        with torch.inference_mode():
            model(**one_page)
    family = bench_model.arch.family_spec
    embedder = Embedder(engine_model, processor, family, name=arch_name, attention=engine_attention)
    return Setup(
        bench_model, images, texts, sdpa, eager, float32, embedder, page_flops, page_flops_as_called, query_flops,
        int(one_page["input_ids"].shape[1]),
    )  # fmt: skip


def engine_default_model(bench_model: BenchModel, like: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The model as `Embedder.load` would run it on a CPU in bf16, sharing `like`'s weight tensors
    (no second copy in memory), and that attention's name."""
    attention = bench_model.cpu_default_attention
    if attention == like.config._attn_implementation:
        return like, attention
    model = bench_model.model(attention)
    model.load_state_dict(like.state_dict(), assign=True)
    return model, attention


def timed_loop(items: list, batch_size: int, forward: Callable[[list], list]) -> Timing:
    """Run `forward` batch by batch; return total seconds, each item's completion time since the start
    (all items arrive at once), and the outputs."""
    started = time.perf_counter()
    latencies: list[float] = []
    outputs: list = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        outputs.extend(forward(batch))
        latencies.extend([time.perf_counter() - started] * len(batch))
    return time.perf_counter() - started, latencies, outputs


def median_round(measure: Measure) -> Timing:
    """`measure()` once untimed, then QUERY_ROUNDS times; the round with the median total seconds."""
    measure()
    rounds = sorted((measure() for _ in range(QUERY_ROUNDS)), key=lambda result: result[0])
    return rounds[len(rounds) // 2]


def seed001_forward(model: torch.nn.Module, process: Callable) -> Callable[[list], list]:
    """Seed 001's loop body: forward, JSON lists, gc (+ empty_cache on CUDA) after every batch."""

    def forward(batch: list) -> list:
        inputs = process(batch).to(model.device)
        with torch.no_grad():
            output = model(**inputs)
        lists = output.to(torch.float32).cpu().numpy().tolist()
        del output, inputs
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        gc.collect()
        return lists

    return forward


def plain_forward(model: torch.nn.Module, process: Callable) -> Callable[[list], list]:
    """colpali-engine's documented usage: the processor on the batch, one forward (on the model's
    device), float32 numpy rows."""

    def forward(batch: list) -> list:
        with torch.inference_mode():
            return list(model(**process(batch).to(model.device)).float().cpu().numpy())

    return forward


def engine_burst(engine: Any, items: list, kind: str, callers: ThreadPoolExecutor) -> Timing:
    """Every item is its own concurrent call to the engine, each from one of `callers`' threads
    (started before timing, as a server's request threads are); per-item latency from the burst's
    start."""
    call = engine.embed_images if kind == "page" else engine.embed_queries
    latencies = [0.0] * len(items)
    started = time.perf_counter()

    def done(index: int) -> Callable[[Future], None]:
        def stamp(_: Future) -> None:
            latencies[index] = time.perf_counter() - started

        return stamp

    futures = [callers.submit(call, [item]) for item in items]
    for index, future in enumerate(futures):
        future.add_done_callback(done(index))
    outputs = [future.result()[0] for future in futures]
    return time.perf_counter() - started, latencies, outputs


def batched_label(batch: int) -> str:
    return f"colpali-engine batched forward (sdpa, batch {batch})"


def baseline_runs(setup: Setup, *, batch: int | None) -> dict[str, Run]:
    """seed 001's loop, the naive float32 loop and (unless `batch` is None) colpali-engine's batched
    forward, each in turn, pages then queries."""
    processor = setup.processor
    runs: dict[str, Run] = {}
    configurations = [
        (SEED001, lambda p: seed001_forward(setup.eager, p), (1, 4)),
        (FLOAT32, lambda p: plain_forward(setup.float32, p), (1, 1)),
    ]
    if batch is not None:
        configurations.append((batched_label(batch), lambda p: plain_forward(setup.sdpa, p), (batch, batch)))
    for label, make, (page_batch, query_batch) in configurations:
        run = runs[label] = Run()
        run.record("page", *timed_loop(setup.images, page_batch, make(processor.process_images)))
        forward = make(processor.process_queries)
        run.record("query", *median_round(lambda f=forward, b=query_batch: timed_loop(setup.texts, b, f)))
        print(f"  {label}: {len(setup.images) / run.page_seconds:.3f} pages/s", flush=True)
    return runs


def engine_run(setup: Setup, config: Any) -> Run:
    from pagelens.engine import Engine

    run = Run()
    threads = max(len(setup.images), len(setup.texts), 1)
    with Engine(setup.embedder, config) as engine, ThreadPoolExecutor(max_workers=threads) as callers:
        list(callers.map(time.sleep, [0.01] * threads))  # every caller thread started
        run.record("page", *engine_burst(engine, setup.images, "page", callers))
        run.record("query", *median_round(lambda: engine_burst(engine, setup.texts, "query", callers)))
    return run


def alternating(measures: dict[str, Measure], rounds: int, *, warm: bool) -> dict[str, Timing]:
    """Each measure once per round (after one untimed call each if `warm`), the order reversed every
    other round, so a drift in the shared cores' speed falls on every configuration alike; per label
    the round with the median total seconds."""
    labels = list(measures)
    if warm:
        for label in labels:
            measures[label]()
    timings: dict[str, list[Timing]] = {label: [] for label in labels}
    for round_ in range(rounds):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            timings[label].append(measures[label]())
    return {label: sorted(taken, key=lambda timing: timing[0])[len(taken) // 2] for label, taken in timings.items()}


def head_to_head(setup: Setup, *, batch: int, config: Any) -> dict[str, Run]:
    """colpali-engine's batched forward and the engine, alternating (`alternating`): pages in
    PAGE_ROUNDS rounds, queries in QUERY_ROUNDS after one untimed burst each."""
    from pagelens.engine import Engine

    processor, batched = setup.processor, batched_label(batch)
    page_forward = plain_forward(setup.sdpa, processor.process_images)
    query_forward = plain_forward(setup.sdpa, processor.process_queries)
    threads = max(len(setup.images), len(setup.texts), 1)
    with Engine(setup.embedder, config) as engine, ThreadPoolExecutor(max_workers=threads) as callers:
        list(callers.map(time.sleep, [0.01] * threads))  # every caller thread started
        pages = alternating(
            {
                batched: lambda: timed_loop(setup.images, batch, page_forward),
                ENGINE: lambda: engine_burst(engine, setup.images, "page", callers),
            },
            PAGE_ROUNDS,
            warm=False,
        )
        queries = alternating(
            {
                batched: lambda: timed_loop(setup.texts, batch, query_forward),
                ENGINE: lambda: engine_burst(engine, setup.texts, "query", callers),
            },
            QUERY_ROUNDS,
            warm=True,
        )
    runs = {}
    for label in (batched, ENGINE):
        run = runs[label] = Run()
        run.record("page", *pages[label])
        run.record("query", *queries[label])
        print(f"  {label}: {len(setup.images) / run.page_seconds:.3f} pages/s", flush=True)
    return runs


def worst_cosine(references: list, vectors: list) -> float:
    """Worst per-vector cosine between paired multi-vectors (reference rows that are all zero dropped)."""
    worst = 1.0
    for reference, got in zip(references, vectors, strict=True):
        reference = np.asarray(reference, dtype=np.float32)
        got = np.asarray(got, dtype=np.float32)
        if reference.shape != got.shape:
            reference = reference[np.linalg.norm(reference, axis=-1) > 0]
        if reference.shape != got.shape:
            return float("nan")
        cosine = (reference * got).sum(-1) / (np.linalg.norm(reference, axis=-1) * np.linalg.norm(got, axis=-1))
        worst = min(worst, float(np.min(cosine)))
    return worst


def parity_figures(runs: dict[str, Run], ours: Run, queries_as_suffix: bool) -> dict[str, float]:
    """Worst per-vector cosines of the engine's vectors against the float32 loop's (pages and queries)
    and seed 001's eager loop's (each). A PaliGemma query alone in an sdpa forward attends both ways
    (models/families.py PALIGEMMA_QUERY_NOTE) where eager and the engine attend causally, so for
    `queries_as_suffix` families the float32 (sdpa) comparison covers pages only."""
    float32, seed001 = runs[FLOAT32], runs[SEED001]
    compared = ours.page_vectors + ([] if queries_as_suffix else ours.query_vectors)
    reference = float32.page_vectors + ([] if queries_as_suffix else float32.query_vectors)
    return {
        "worst_cosine_bf16_vs_float32": worst_cosine(reference, compared),
        "worst_cosine_vs_seed001_pages": worst_cosine(seed001.page_vectors, ours.page_vectors),
        "worst_cosine_vs_seed001_queries": worst_cosine(seed001.query_vectors, ours.query_vectors),
    }


@dataclass
class Measured:
    """What a table needs once the models are gone: the runs and the workload's size and FLOPs."""

    title: str
    runs: dict[str, Run]
    pages: int
    queries: int
    page_flops: float
    query_flops: float

    @classmethod
    def of(cls, title: str, setup: Setup, runs: dict[str, Run]) -> Measured:
        for run in runs.values():
            run.page_vectors, run.query_vectors = [], []
        return cls(title, runs, len(setup.images), len(setup.texts), setup.page_flops, setup.query_flops)


def add_rows(report: Report, measured: Measured, peak: float, baseline: str) -> None:
    """One table row per run: throughput, ratio to `baseline`, p50/p95 latency and MFU vs the bf16 peak."""
    pages, queries, runs, title = measured.pages, measured.queries, measured.runs, measured.title
    page_flops, query_flops = measured.page_flops, measured.query_flops
    base = runs[baseline]
    for label, run in runs.items():
        pages_per_s, queries_per_s = pages / run.page_seconds, queries / run.query_seconds
        report.add_row(
            {
                "configuration": label,
                "pages/s": pages_per_s,
                "x seed 001": pages_per_s / (pages / base.page_seconds),
                "page p50 s": float(np.percentile(run.page_latencies, 50)),
                "page p95 s": float(np.percentile(run.page_latencies, 95)),
                "MFU %": 100 * pages_per_s * page_flops / (peak * 1e9),
                "queries/s": queries_per_s,
                "x seed 001 (queries)": queries_per_s / (queries / base.query_seconds),
                "query p50 ms": 1000 * float(np.percentile(run.query_latencies, 50)),
                "query p95 ms": 1000 * float(np.percentile(run.query_latencies, 95)),
                "query MFU %": 100 * queries_per_s * query_flops / (peak * 1e9),
            },
            table=title,
        )


def run(
    *,
    archs: list[str],
    layers: int | None,
    pages: int,
    queries: int,
    batch: int = 4,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    """Measure every configuration for each architecture; print, write the JSON and the docs section."""
    from pagelens.engine import EngineConfig

    report = Report("engine", args if args is not None else {"arch": archs, "layers": layers, "pages": pages})
    peaks = [matmul_peak_gflops(torch.bfloat16)]
    report.machine["dtype"] = "bfloat16 (float32 for the naive loop)"
    descriptions, measured = [], []
    for arch_name in archs:
        with tempfile.TemporaryDirectory() as scratch:
            setup = prepare(arch_name, Path(scratch), layers=layers, pages=pages, queries=queries)
            print(f"{arch_name}: {setup.describe()}", flush=True)
            runs = baseline_runs(setup, batch=None)
            runs.update(head_to_head(setup, batch=batch, config=EngineConfig.for_backend(setup.embedder)))
            title = f"{arch_name}, {setup.bench_model.depth}"
            peaks.append(matmul_peak_gflops(torch.bfloat16))
            ours = runs[ENGINE]
            parity = parity_figures(runs, ours, setup.bench_model.arch.family_spec.queries_as_suffix)
            measured.append(Measured.of(title, setup, runs))
            report.figures[arch_name] = {
                "text_layers": setup.bench_model.text_layers,
                "vision_layers": setup.bench_model.vision_layers,
                "tokens_per_page": setup.tokens_per_page,
                "page_gflops": setup.page_flops / 1e9,
                "page_gflops_as_called": setup.page_flops_as_called / 1e9,
                "query_gflops": setup.query_flops / 1e9,
                "engine_attention": setup.embedder.info.attention,
                **parity,
            }
            descriptions.append(
                f"**{arch_name}**: {setup.describe()}; the engine's attention: {setup.embedder.info.attention}."
            )
            report.note(
                f"{arch_name} parity (bar >= 0.999): worst per-vector cosine, pagelens bf16 vs the same weights "
                f"in float32 {parity['worst_cosine_bf16_vs_float32']:.5f}; vs seed 001's loop (eager, bf16) "
                f"{parity['worst_cosine_vs_seed001_pages']:.5f} (pages), "
                f"{parity['worst_cosine_vs_seed001_queries']:.5f} (queries)."
            )
            del setup, runs
            gc.collect()
    report.describe(
        " ".join(descriptions) + f" Torch threads {torch.get_num_threads()}; colpali-engine batch {batch}. "
        "Latency: per item, from a burst where all arrive at once to its result. MFU: counted forward FLOPs x "
        "rate / the bf16 matmul peak measured in this run (best of the samples taken at the start and after each "
        "architecture; the float32 row too)."
    )
    for table in measured:  # other processes share the cores: the best peak sample is closest to the hardware
        add_rows(report, table, max(peaks), SEED001)
    report.machine.update(bf16_matmul_gflops=max(peaks), bf16_matmul_gflops_samples=peaks)
    return report.finish(json_path, docs_path)
