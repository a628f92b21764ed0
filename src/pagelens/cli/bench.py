"""`pagelens bench ...`: benchmarks that print figures measured side by side (see docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pagelens.bench.synthetic_pages import BACKGROUND, OWN_CONCEPTS
from pagelens.cli.common import settings_from_options

bench_app = typer.Typer(help="Benchmarks (print figures measured side by side).", no_args_is_help=True)

OutOption = Annotated[Path | None, typer.Option("--out", help="JSON results file (default: bench-results/NAME.json).")]
DocsOption = Annotated[Path | None, typer.Option(help="Markdown file whose bench section to refresh.")]
UpdateDocsOption = Annotated[bool, typer.Option(help="Refresh this bench's section of --docs.")]
ArchOption = Annotated[
    list[str] | None,
    typer.Option("--arch", help="colqwen2.5-3b | colmodernvbert | tiny-colqwen2.5 | tiny-colmodernvbert (repeatable)."),
]
LayersOption = Annotated[int, typer.Option(help="At most this many layers in each tower (text and vision).")]
FullDepthOption = Annotated[bool, typer.Option(help="Published depth (36+32 ColQwen2.5-3B, 22+12 ColModernVBert).")]


def _docs(docs: Path | None, update_docs: bool) -> Path | None:
    from pagelens.bench.report import DEFAULT_DOCS

    return (docs or DEFAULT_DOCS) if update_docs else None


@bench_app.command("engine")
def bench_engine(
    arch: ArchOption = None,
    layers: LayersOption = 2,
    full_depth: FullDepthOption = False,
    pages: Annotated[int, typer.Option(help="Pages per configuration.")] = 3,
    queries: Annotated[int, typer.Option(help="Queries per configuration.")] = 8,
    batch: Annotated[int, typer.Option(help="colpali-engine's batch size.")] = 4,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """Engine vs colpali-engine batched, a hand-written bf16 eager batch-1 loop and a float32 loop: rate, p50/p95,
    MFU."""
    from pagelens.bench.engine import run
    from pagelens.bench.models import PUBLISHED

    archs = arch or list(PUBLISHED)
    args = {"arch": archs, "layers": layers, "full_depth": full_depth, "pages": pages, "queries": queries,
            "batch": batch}  # fmt: skip
    run(archs=archs, layers=None if full_depth else layers, pages=pages, queries=queries, batch=batch, args=args,
        json_path=out, docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("ingest")
def bench_ingest(
    arch: Annotated[
        list[str] | None, typer.Option("--arch", help="Architectures (default: tiny-colqwen2.5 and colqwen2.5-3b).")
    ] = None,
    layers: LayersOption = 2,
    full_depth: FullDepthOption = False,
    pages: Annotated[int, typer.Option(help="Pages of the synthetic PDF.")] = 100,
    rounds: Annotated[int, typer.Option(help="Alternating rounds of each configuration.")] = 2,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """A PDF ingested end to end (render + embed + store) against the engine alone on the same pages pre-rendered."""
    from pagelens.bench.ingest import run

    archs = arch or ["tiny-colqwen2.5", "colqwen2.5-3b"]
    args = {"arch": archs, "layers": layers, "full_depth": full_depth, "pages": pages, "rounds": rounds}
    run(archs=archs, layers=None if full_depth else layers, pages=pages, rounds=rounds, args=args, json_path=out,
        docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("ask")
def bench_ask(
    arch: Annotated[
        str, typer.Option(help="The embedding architecture (see bench engine --arch).")
    ] = "tiny-colqwen2.5",
    layers: LayersOption = 2,
    full_depth: FullDepthOption = False,
    pages: Annotated[int, typer.Option(help="Pages of the synthetic PDF in the collection.")] = 20,
    asks: Annotated[int, typer.Option(help="Distinct questions per k (and cached asks).")] = 20,
    k: Annotated[list[int] | None, typer.Option("--k", help="Pages per ask (repeatable; default 1, 3, 5).")] = None,
    tokens: Annotated[int, typer.Option(help="Tokens of the stand-in's answer.")] = 32,
    token_rate: Annotated[float, typer.Option(help="The stand-in's tokens per second.")] = 100.0,
    first_token_ms: Annotated[float, typer.Option(help="The stand-in's delay before its first token.")] = 50.0,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """/ask end to end against a stand-in answer server at a fixed token rate: stage timings p50/p95 per k,
    pagelens' overhead over the generator, and the cached answer's latency."""
    from pagelens.bench.ask import run

    ks = tuple(k or (1, 3, 5))
    args = {"arch": arch, "layers": layers, "full_depth": full_depth, "pages": pages, "asks": asks, "k": list(ks),
            "tokens": tokens, "token_rate": token_rate, "first_token_ms": first_token_ms}  # fmt: skip
    run(arch=arch, layers=None if full_depth else layers, pages=pages, asks=asks, ks=ks, tokens=tokens,
        token_rate=token_rate, first_token_ms=first_token_ms, args=args, json_path=out,
        docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("variants")
def bench_variants(
    text_layers: Annotated[int, typer.Option(help="Language-model layers (published: 36).")] = 4,
    vision_layers: Annotated[int, typer.Option(help="Vision-tower layers (published: 32).")] = 4,
    pages: Annotated[int, typer.Option(help="Rendered pages per variant.")] = 10,
    queries: Annotated[int, typer.Option(help="Queries per variant.")] = 24,
    top_k: Annotated[int, typer.Option(help="k of the top-k ranking agreement.")] = 5,
    out: Annotated[Path, typer.Option(help="Write the figures as JSON here.")] = Path("bench-results/variants.json"),
) -> None:
    """float32, bf16, int8-dynamic and bf16+compile side by side: pages/s, queries/s, cosine and MaxSim
    ranking agreement against float32 (ColQwen2.5-3B dims, random weights)."""
    from pagelens.bench.variants import run

    run(text_layers=text_layers, vision_layers=vision_layers, pages=pages, queries=queries, top_k=top_k, out=out)


@bench_app.command("priority")
def bench_priority(
    arch: Annotated[str, typer.Option(help="Architecture (see bench engine --arch).")] = "colqwen2.5-3b",
    layers: LayersOption = 4,
    full_depth: FullDepthOption = False,
    queries: Annotated[int, typer.Option(help="Queries per measurement.")] = 8,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """Query p50 idle and during a sustained page ingest, for each engine mode."""
    from pagelens.bench.priority import run

    args = {"arch": arch, "layers": layers, "full_depth": full_depth, "queries": queries}
    run(arch=arch, layers=None if full_depth else layers, queries=queries, args=args, json_path=out,
        docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("http")
def bench_http(
    arch: ArchOption = None,
    layers: LayersOption = 2,
    full_depth: FullDepthOption = False,
    pages: Annotated[int, typer.Option(help="One-page requests per configuration.")] = 4,
    queries: Annotated[int, typer.Option(help="One-query requests per configuration.")] = 8,
    clients: Annotated[int, typer.Option(help="Concurrent HTTP clients, each sending one request at a time.")] = 4,
    batch: Annotated[int, typer.Option(help="colpali-engine's batch size.")] = 4,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """The real server over loopback with N concurrent clients vs the same baselines as bench engine."""
    from pagelens.bench.http import run
    from pagelens.bench.models import PUBLISHED

    archs = arch or list(PUBLISHED)
    args = {"arch": archs, "layers": layers, "full_depth": full_depth, "pages": pages, "queries": queries,
            "clients": clients, "batch": batch}  # fmt: skip
    run(archs=archs, layers=None if full_depth else layers, pages=pages, queries=queries, clients=clients,
        batch=batch, args=args, json_path=out, docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("coldstart")
def bench_coldstart(
    model: Annotated[
        str | None, typer.Option(help="Model to start (default: a tiny ColQwen2.5 built offline).")
    ] = None,
    device: Annotated[str, typer.Option(help="Device of the served model.")] = "cpu",
    repeats: Annotated[int, typer.Option(help="Fresh processes of each kind.")] = 3,
    mmap_arch: Annotated[
        str | None, typer.Option(help="Architecture saved at full depth for the mmap loading check ('' to skip).")
    ] = "colmodernvbert",
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """Process start -> first embedding served, against import + from_pretrained alone; mmap loading."""
    from pagelens.bench.coldstart import run

    args = {"model": model, "device": device, "repeats": repeats, "mmap_arch": mmap_arch}
    run(model=model, device=device, repeats=repeats, mmap_arch=mmap_arch or None, args=args, json_path=out,
        docs_path=_docs(docs, update_docs))  # fmt: skip


@bench_app.command("wire")
def bench_wire(
    pages: Annotated[int, typer.Option(help="Pages per measurement.")] = 16,
    tokens: Annotated[int, typer.Option(help="Vectors per page (ColQwen2.5 letter page: ~755).")] = 755,
    repeats: Annotated[int, typer.Option(help="Best of this many rounds.")] = 3,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """Response encodings: bytes and encode + decode time per page, against plain JSON lists of floats."""
    from pagelens.bench.wire import run

    args = {"pages": pages, "tokens": tokens, "repeats": repeats}
    run(pages=pages, tokens=tokens, repeats=repeats, args=args, json_path=out, docs_path=_docs(docs, update_docs))


@bench_app.command("latency")
def bench_latency(
    url: Annotated[str, typer.Option(help="Server URL, e.g. a Modal endpoint or http://127.0.0.1:8000.")],
    api_key: Annotated[
        str | None, typer.Option(help="Bearer key (default: PAGELENS_API_KEY or SERVICE_API_KEY).")
    ] = None,
    num_warmup: Annotated[int, typer.Option(help="Warm requests after the first.")] = 10,
    test_scaledown: Annotated[bool, typer.Option(help="Wait idle, then measure one more cold start.")] = False,
    scaledown_wait: Annotated[float, typer.Option(help="Idle seconds before the post-scaledown request.")] = 65.0,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
) -> None:
    """Cold-start and warm-latency report against a running server (its requests in the /embed format)."""
    from pagelens.bench.latency import run

    if api_key is None:
        api_key = settings_from_options().api_key
    run(url=url, api_key=api_key, num_warmup=num_warmup, test_scaledown=test_scaledown,
        scaledown_wait=scaledown_wait, out=out)  # fmt: skip


@bench_app.command("search")
def bench_search(
    pages: Annotated[int, typer.Option(help="Synthetic ColQwen-sized pages in the collection.")] = 10_000,
    queries: Annotated[int, typer.Option(help="Queries timed.")] = 100,
    k: Annotated[int, typer.Option(help="Top-k.")] = 10,
    prefetch: Annotated[str, typer.Option(help="Comma-separated fast-mode prefetch sizes.")] = "50,100,200",
    qdrant_queries: Annotated[
        int | None,
        typer.Option(help="Queries also run by Qdrant Edge's own MaxSim (default: 3 below 50k pages, else 0)."),
    ] = None,
    brute_queries: Annotated[int, typer.Option(help="Queries the brute force is timed on (truth covers all).")] = 20,
    workers: Annotated[
        int | None, typer.Option(help="Processes generating pages for a build (default: one fewer than the cores).")
    ] = None,
    store_dir: Annotated[
        str | None, typer.Option(help="Where the collection is built (reused when it matches; default bench-results/).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Corpus seed.")] = 0,
    own_concepts: Annotated[int, typer.Option(help="Concepts of each page's own (more: more diverse pages).")] = (
        OWN_CONCEPTS
    ),
    background: Annotated[float, typer.Option(help="Share of background tokens per page.")] = BACKGROUND,
    json_path: Annotated[str | None, typer.Option("--json", help="JSON file (default bench-results/).")] = None,
    docs: Annotated[str | None, typer.Option(help="Markdown file whose search section is refreshed.")] = None,
    adaptive: Annotated[
        bool, typer.Option(help="Instead: sampled fast searches adapt the default prefetch to --target (recall only).")
    ] = False,
    target: Annotated[float, typer.Option(help="--adaptive: the recall@k to keep.")] = 0.95,
    start_prefetch: Annotated[int | None, typer.Option(help="--adaptive: the default prefetch to start from.")] = None,
    min_prefetch: Annotated[int, typer.Option(help="--adaptive: the adapted prefetch's lower bound.")] = 50,
    max_queries: Annotated[int, typer.Option(help="--adaptive: at most this many sampled fast searches.")] = 600,
) -> None:
    """Exact and fast collection search: p50/p95 and recall@k, against a streamed brute-force float32 MaxSim.
    With --adaptive: recall@k at the starting prefetch, then a stream of sampled fast searches until
    the adapted default prefetch holds, and recall@k there (--queries held-out queries, offline)."""
    from pagelens.bench.report import DEFAULT_DOCS
    from pagelens.bench.search import run

    if adaptive:
        from pagelens.bench.adaptive import run as run_adaptive

        run_adaptive(pages=pages, queries=queries, k=k, start_prefetch=start_prefetch, min_prefetch=min_prefetch,
                     target=target, max_queries=max_queries, store_dir=store_dir, seed=seed,
                     own_concepts=own_concepts, background=background, json_path=json_path,
                     docs_path=docs or DEFAULT_DOCS)  # fmt: skip
        return
    sizes = tuple(int(size) for size in prefetch.split(",") if size.strip())
    run(pages=pages, queries=queries, k=k, prefetch=sizes, qdrant_queries=qdrant_queries, brute_queries=brute_queries,
        store_dir=store_dir, seed=seed, own_concepts=own_concepts, background=background, workers=workers,
        json_path=json_path, docs_path=docs or DEFAULT_DOCS)  # fmt: skip


@bench_app.command("gpu")
def bench_gpu(
    device: Annotated[str, typer.Option(help="The CUDA device (cuda, cuda:1 ...).")] = "cuda",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="The same path on the CPU with the tiny model: checks the command only.")
    ] = False,
    arch: Annotated[
        list[str] | None, typer.Option("--arch", help="Architectures (default: colqwen2.5-3b and colmodernvbert).")
    ] = None,
    pages: Annotated[int, typer.Option(help="Pages per configuration.")] = 32,
    queries: Annotated[int, typer.Option(help="Queries per configuration.")] = 64,
    batch: Annotated[int, typer.Option(help="colpali-engine's batch size.")] = 8,
    clients: Annotated[int, typer.Option(help="Concurrent HTTP clients.")] = 16,
    out: OutOption = None,
    docs: DocsOption = None,
    update_docs: UpdateDocsOption = True,
) -> None:
    """bench engine + bench http at full depth on a CUDA GPU (FlashAttention 2 when installed, bf16, batched
    pages, pinned memory), one table; --dry-run: the CPU path with the tiny model (docs left alone)."""
    from pagelens.bench.gpu import run

    args = {"device": device, "dry_run": dry_run, "arch": arch, "pages": pages, "queries": queries, "batch": batch,
            "clients": clients}  # fmt: skip
    run(device=device, dry_run=dry_run, archs=arch, pages=pages, queries=queries, batch=batch, clients=clients,
        args=args, json_path=out, docs_path=_docs(docs, update_docs))  # fmt: skip
