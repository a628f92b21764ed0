"""The model commands: `pagelens embed`, `serve`, `make-tiny`, `families`, `demo`."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from pagelens.cli.common import (
    KeyOption,
    LlmImagesOption,
    LlmKeyOption,
    LlmModelOption,
    LlmUrlOption,
    prefixed,
    settings_from_options,
)
from pagelens.errors import InvalidInput, PagelensError

if TYPE_CHECKING:
    from pagelens.settings import Settings

# Model options default to None, so that PAGELENS_* variables apply when a flag is not given.
DeviceOption = Annotated[str | None, typer.Option(help="auto | cpu | cuda[:n] | mps (default auto)")]
DtypeOption = Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16 (default auto)")]
AttnOption = Annotated[
    str | None, typer.Option("--attn", help="auto | flash_attention_2 | cpu_blocked | sdpa | eager (default auto)")
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


def embed(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Hub id or local checkpoint directory (default PAGELENS_MODEL).")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image", "-i", help="Page image, PDF, multi-page TIFF or office document (repeatable): one output a page."
        ),
    ] = None,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Query text (repeatable).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz file.")] = Path("embeddings.npz"),
    password: Annotated[str | None, typer.Option(help="Password of encrypted PDFs (never stored or logged).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Embed on this pagelens server (its morphik-core route) instead of here.")
    ] = None,
    api_key: KeyOption = None,
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
    """Embed pages and queries into an .npz file, in this process or on a server (--url).

    The file holds `image_i` (numbered across files and their pages), `query_i`, `info` (the model,
    as JSON) and `sources` (JSON: the file and page of each `image_i`). PDFs render here, at
    PAGELENS_PDF_DPI (150), a few pages at a time."""
    from pagelens.service import document_pages

    _setup_logging(verbose)
    files, queries = image or [], query or []
    if not files and not queries:
        raise InvalidInput("give at least one --image or --query")
    if output_dtype not in ("float32", "float16"):
        raise InvalidInput("--output-dtype must be float32 or float16")
    settings = settings_from_options(
        model=model, device=device, dtype=dtype, attn=attn, family=family, threads=threads, pool_factor=pool_factor,
        quantize=quantize, compile=compile,
    )  # fmt: skip
    contents = [path.read_bytes() for path in files]  # a missing file fails before the model loads
    arrays: dict[str, np.ndarray] = {}
    sources: list[dict] = []
    with _embedder(settings, url, api_key) as (embed_images, embed_queries, info):
        budget = info().get("page_pixels") if files else None  # rendered as an ingest renders them
        for path, data in zip(files, contents, strict=True):
            done = 0
            try:
                for batch in document_pages(data, settings, password=password, render_pixels=budget):
                    for vectors in embed_images(batch, dtype=output_dtype):
                        done += 1
                        arrays[f"image_{len(sources)}"] = vectors
                        sources.append({"file": str(path), "page": done})
            except PagelensError as error:
                page = f" page {done + 1 + error.index}" if error.index is not None else ""
                raise prefixed(error, f"{path}{page}") from error
        for number, vectors in enumerate(embed_queries(queries, dtype=output_dtype) if queries else []):
            arrays[f"query_{number}"] = vectors
        model_info = info()
    extra = {"sources": np.array(json.dumps(sources))} if sources else {}
    np.savez(out, info=np.array(json.dumps(model_info)), **extra, **arrays)
    typer.echo(json.dumps(model_info))
    for name, vectors in arrays.items():
        origin = sources[int(name[6:])] if name.startswith("image_") else None
        where = f"  <- {origin['file']} page {origin['page']}" if origin else ""
        typer.echo(f"{name}: shape {tuple(vectors.shape)} {vectors.dtype}{where}")
    typer.echo(f"wrote {out}")


@contextmanager
def _embedder(settings: Settings, url: str | None, api_key: str | None) -> Iterator[tuple[Any, Any, Any]]:
    """`(embed_images, embed_queries, info)` of a server (`url`) or of the settings' model, loaded here."""
    if url:
        from pagelens.cli.backends import Remote

        remote = Remote(url, api_key if api_key is not None else settings.api_key)
        try:
            client = remote.client
            yield client.embed_images, client.embed_queries, lambda: client.info()["model"]
        finally:
            remote.close()
        return
    from pagelens.service import Runtime

    with Runtime(settings).start() as runtime:
        yield runtime.embed_images, runtime.embed_queries, lambda: runtime.info.as_dict()


def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub id or directory (default: PAGELENS_MODEL, COLPALI_MODEL_ID, ModernVBERT/colmodernvbert-merged).",
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
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key: LlmKeyOption = None,
    llm_images: LlmImagesOption = None,
) -> None:
    """Serve the model, collections and search over HTTP.

    Embeddings in morphik-core's format (/embeddings), the /embed format and OpenAI-style
    (/v1/embeddings); /score; collections, documents, search and ingest jobs (/docs lists every
    route); answers over a collection's pages (/collections/{c}/ask) with --llm-url or --llm-model.
    Refuses to start without an API key unless --no-auth is given."""
    import uvicorn

    from pagelens.api import create_app
    from pagelens.api.security import AuthNotConfigured
    from pagelens.api.server import uvicorn_options

    settings = settings_from_options(
        model=model, host=host, port=port, api_key=api_key, no_auth=no_auth or None, device=device, dtype=dtype,
        attn=attn, family=family, threads=threads, pool_factor=pool_factor, quantize=quantize, compile=compile,
        log_level=log_level, qdrant_url=qdrant_url, data_dir=data_dir, llm_url=llm_url, llm_model=llm_model,
        llm_api_key=llm_api_key, llm_images=llm_images,
    )  # fmt: skip
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asgi_app = create_app(settings)
    except AuthNotConfigured as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # keep-alive and shutdown timeouts, and a protocol that closes connections whose headers trickle in
    uvicorn.run(asgi_app, **uvicorn_options(settings))


def make_tiny(
    family: Annotated[str, typer.Option(help="Model family, e.g. colqwen2_5, colpali, colmodernvbert.")],
    directory: Annotated[Path, typer.Argument(help="Where to write the checkpoint.")],
    adapter: Annotated[bool, typer.Option(help="Write a LoRA adapter with its base model in DIR/base.")] = False,
    seed: int = 0,
) -> None:
    """Build a tiny random-weight checkpoint of a real architecture, offline (for smoke tests)."""
    from pagelens.testing import build_tiny_checkpoint

    path = build_tiny_checkpoint(family, directory, adapter=adapter, seed=seed)
    typer.echo(f"wrote tiny {family} checkpoint to {path}")


def families() -> None:
    """List the supported model families."""
    from pagelens.models.families import FAMILIES

    for family in FAMILIES:
        kind = "multi-vector" if family.multi_vector else "single-vector"
        aliases = f" (aka {', '.join(family.aliases)})" if family.aliases else ""
        typer.echo(f"{family.name:16} {family.model_class:16} {kind:14} {'/'.join(family.model_types)}{aliases}")


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
