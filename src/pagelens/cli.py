"""The `pagelens` command line."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pagelens.bench.synthetic_pages import BACKGROUND, OWN_CONCEPTS
from pagelens.cli_index import index_app, search, settings_from_options
from pagelens.errors import PagelensError

app = typer.Typer(help="Serve ColPali-family embedding models.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (print figures measured side by side).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(index_app, name="index")
app.command()(search)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Hub id or local checkpoint directory.")]
# Model options default to None, so that PAGELENS_* variables apply when a flag is not given.
DeviceOption = Annotated[str | None, typer.Option(help="auto | cpu | cuda[:n] | mps (default auto)")]
DtypeOption = Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16 (default auto)")]
AttnOption = Annotated[
    str | None, typer.Option("--attn", help="auto | flash_attention_2 | sdpa | eager (default auto)")
]
FamilyOption = Annotated[str | None, typer.Option(help="Override the detected model family.")]
ThreadsOption = Annotated[int | None, typer.Option(help="CPU threads (default: PAGELENS_CPU_THREADS or torch's).")]
PoolOption = Annotated[int | None, typer.Option(help="Hierarchical token pooling factor for page images.")]
QuantizeOption = Annotated[
    str | None, typer.Option(help="none | int8 (int8 dynamic linears, float32 activations, CPU only; default none)")
]
CompileOption = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the model's repeated blocks at load (default off)."),
]


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def embed(
    model: ModelOption,
    image: Annotated[list[Path] | None, typer.Option("--image", "-i", help="Page image file (repeatable).")] = None,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Query text (repeatable).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz file.")] = Path("embeddings.npz"),
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    attn: AttnOption = None,
    family: FamilyOption = None,
    threads: ThreadsOption = None,
    pool_factor: PoolOption = None,
    quantize: QuantizeOption = None,
    compile: CompileOption = None,
    output_dtype: Annotated[str, typer.Option(help="float32 | float16")] = "float32",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Embed page images and queries; write `image_i` / `query_i` arrays and `info` to an .npz file."""
    from pagelens.service import Runtime

    _setup_logging(verbose)
    images, queries = image or [], query or []
    if not images and not queries:
        raise typer.BadParameter("give at least one --image or --query")
    if output_dtype not in ("float32", "float16"):
        raise typer.BadParameter("--output-dtype must be float32 or float16")
    try:
        payloads = [path.read_bytes() for path in images]
    except OSError as error:
        raise typer.BadParameter(f"cannot read image: {error}") from error
    settings = settings_from_options(
        model=model, device=device, dtype=dtype, attn=attn, family=family, threads=threads, pool_factor=pool_factor,
        quantize=quantize, compile=compile,
    )  # fmt: skip
    try:
        with Runtime(settings).start() as runtime:
            image_vectors = runtime.embed_images(payloads, dtype=output_dtype) if payloads else []  # type: ignore[arg-type]
            query_vectors = runtime.embed_queries(queries, dtype=output_dtype) if queries else []  # type: ignore[arg-type]
            info = runtime.info
    except PagelensError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    arrays = {f"image_{i}": v for i, v in enumerate(image_vectors)}
    arrays |= {f"query_{i}": v for i, v in enumerate(query_vectors)}
    np.savez(out, info=np.array(json.dumps(info.as_dict())), **arrays)
    typer.echo(json.dumps(info.as_dict()))
    for name, vectors in arrays.items():
        typer.echo(f"{name}: shape {tuple(vectors.shape)} {vectors.dtype}")
    typer.echo(f"wrote {out}")


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Hub id or directory (default: PAGELENS_MODEL, COLPALI_MODEL_ID, seed 002's model)."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Bearer key (default: PAGELENS_API_KEY or SERVICE_API_KEY).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve with no key at all (PAGELENS_NO_AUTH=1); without a key, required.")
    ] = False,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    attn: AttnOption = None,
    family: FamilyOption = None,
    threads: ThreadsOption = None,
    pool_factor: PoolOption = None,
    quantize: QuantizeOption = None,
    compile: CompileOption = None,
    log_level: Annotated[str | None, typer.Option(help="debug | info | warning | error")] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(help="Keep collections' pages on this Qdrant server (key: PAGELENS_QDRANT_API_KEY), not Edge."),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Where collections live (default: PAGELENS_DATA_DIR or the user's data dir).")
    ] = None,
) -> None:
    """Serve the model over HTTP (morphik-core /embeddings, seed 004 /embed, /v1/embeddings, /score).
    Refuses to start without an API key unless --no-auth is given."""
    import uvicorn

    from pagelens.api import create_app
    from pagelens.api.security import AuthNotConfigured

    settings = settings_from_options(
        model=model, host=host, port=port, api_key=api_key, no_auth=no_auth or None, device=device, dtype=dtype,
        attn=attn, family=family, threads=threads, pool_factor=pool_factor, quantize=quantize, compile=compile,
        log_level=log_level, qdrant_url=qdrant_url, data_dir=data_dir,
    )  # fmt: skip
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asgi_app = create_app(settings)
    except AuthNotConfigured as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # uvicorn reads request headers with no time limit of its own (h11 and httptools alike); it closes idle
    # keep-alive connections, and on shutdown gives requests in flight a bounded time to finish
    uvicorn.run(
        asgi_app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds, timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )  # fmt: skip


@app.command("make-tiny")
def make_tiny(
    family: Annotated[str, typer.Option(help="Model family, e.g. colqwen2_5, colpali, colmodernvbert.")],
    directory: Annotated[Path, typer.Argument(help="Where to write the checkpoint.")],
    adapter: Annotated[bool, typer.Option(help="Write a LoRA adapter with its base model in DIR/base.")] = False,
    seed: int = 0,
) -> None:
    """Build a tiny random-weight checkpoint of a real architecture, offline (for smoke tests)."""
    from pagelens.testing import build_tiny_checkpoint

    try:
        path = build_tiny_checkpoint(family, directory, adapter=adapter, seed=seed)
    except PagelensError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"wrote tiny {family} checkpoint to {path}")


@app.command()
def families() -> None:
    """List the supported model families."""
    from pagelens.models.families import FAMILIES

    for family in FAMILIES:
        kind = "multi-vector" if family.multi_vector else "single-vector"
        aliases = f" (aka {', '.join(family.aliases)})" if family.aliases else ""
        typer.echo(f"{family.name:16} {family.model_class:16} {kind:14} {'/'.join(family.model_types)}{aliases}")


@app.command()
def demo(family: str = "colqwen2_5") -> None:
    """Offline smoke run: build a tiny checkpoint, embed a generated page and a query, score them."""
    import asyncio

    from PIL import Image, ImageDraw

    from pagelens.service import Runtime
    from pagelens.settings import Settings
    from pagelens.testing import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = build_tiny_checkpoint(family, Path(scratch) / family)
        page = Image.new("RGB", (600, 800), "white")
        ImageDraw.Draw(page).text((40, 40), "Quarterly revenue: 42 M", fill="black")
        query = "What was the quarterly revenue?"
        with Runtime(Settings(model=str(checkpoint), device="cpu", dtype="float32")).start() as runtime:
            (page_vectors,) = runtime.embed_images([page])
            (query_vectors,) = runtime.embed_queries([query])
            (score,) = asyncio.run(runtime.ready_embeddings().score(query, embeddings=[page_vectors]))
            info = runtime.info
    typer.echo(json.dumps(info.as_dict()))
    typer.echo(f"page vectors {page_vectors.shape}, query vectors {query_vectors.shape}")
    typer.echo(f"{'MaxSim' if info.multi_vector else 'dot'}(query, page) = {score:.4f}")


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
    """Engine vs colpali-engine batched, seed 001's loop and a float32 loop: rate, p50/p95, MFU."""
    from pagelens.bench.engine import run
    from pagelens.bench.models import PUBLISHED

    archs = arch or list(PUBLISHED)
    args = {"arch": archs, "layers": layers, "full_depth": full_depth, "pages": pages, "queries": queries,
            "batch": batch}  # fmt: skip
    run(archs=archs, layers=None if full_depth else layers, pages=pages, queries=queries, batch=batch, args=args,
        json_path=out, docs_path=_docs(docs, update_docs))  # fmt: skip


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
    """Response encodings: bytes and encode + decode time per page, against seed 001's JSON lists."""
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
    out: Annotated[Path | None, typer.Option(help="Write seed 004's JSON report here.")] = None,
) -> None:
    """Seed 004's cold-start and warm-latency report against a running server."""
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
    qdrant_queries: Annotated[int, typer.Option(help="Queries also run by Qdrant Edge's own MaxSim.")] = 3,
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
) -> None:
    """Exact and fast collection search: p50/p95 and recall@k, against brute-force torch MaxSim."""
    from pagelens.bench.report import DEFAULT_DOCS
    from pagelens.bench.search import run

    sizes = tuple(int(size) for size in prefetch.split(",") if size.strip())
    run(pages=pages, queries=queries, k=k, prefetch=sizes, qdrant_queries=qdrant_queries, store_dir=store_dir,
        seed=seed, own_concepts=own_concepts, background=background, json_path=json_path,
        docs_path=docs or DEFAULT_DOCS)  # fmt: skip


def main() -> None:
    app()


if __name__ == "__main__":
    main()
