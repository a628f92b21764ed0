"""`pagelens ask`: a question over a collection's pages, the answer streamed to the terminal and
then the pages it cites; embedded (the embedding and answer models load in this process) or
through a running server (`--url`)."""

from __future__ import annotations

from typing import Annotated

import typer

from pagelens.cli.backends import open_backend
from pagelens.cli.common import (
    CollectionOption,
    DataOption,
    KeyOption,
    LlmImagesOption,
    LlmKeyOption,
    LlmModelOption,
    LlmUrlOption,
    ModelOption,
    UrlOption,
    echo_json,
    json_option,
)
from pagelens.cli.index import FILTER_HELP, PREFETCH_HELP
from pagelens.codecs.metadata import check_filter
from pagelens.errors import InvalidInput
from pagelens.service import MAX_PREFETCH

JSON_HELP = "Print the whole response as JSON at the end: answer, sources, model, usage, timings, cached."


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionOption,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=20, help="Pages shown to the answer model.")] = 3,
    mode: Annotated[str, typer.Option(help="exact | fast (as search)")] = "exact",
    prefetch: Annotated[int | None, typer.Option(min=1, max=MAX_PREFETCH, help=PREFETCH_HELP)] = None,
    filter: Annotated[str | None, typer.Option("--filter", help=FILTER_HELP)] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=8192, help="At most this many tokens of answer.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key: LlmKeyOption = None,
    llm_images: LlmImagesOption = None,
) -> None:
    """Answer a question from the pages of a collection that search finds for it, citing them by number.

    The answer streams to the terminal, then the pages cited and the time each stage took. Embedded,
    the answer model is --llm-url's server or --llm-model loaded here (or PAGELENS_LLM_*); with
    --url, the server's own."""
    conditions = json_option(filter, "--filter")
    check_filter(conditions, field="--filter")  # before any model loads or request leaves
    llm = {"llm_url": llm_url, "llm_model": llm_model, "llm_api_key": llm_api_key, "llm_images": llm_images}
    if url and any(value is not None for value in llm.values()):
        raise InvalidInput("--llm-* options are for embedded use; with --url, the server's answer model answers "
                           "(pagelens serve --llm-url ...)")  # fmt: skip
    answer: list[str] = []
    response: dict = {}

    def on_event(event: str, data: dict) -> None:
        if event == "sources":
            response["sources"] = data["sources"]
        elif event == "token":
            answer.append(data["text"])
            if not as_json:
                typer.echo(data["text"], nl=False)
        elif event == "done":
            response.update(data)

    options = {"k": k, "mode": mode, "prefetch": prefetch, "filter": conditions, "max_tokens": max_tokens}
    extra = {} if url else {name: value for name, value in llm.items() if value is not None}
    with open_backend(url, api_key, model=model, data_dir=data_dir, **extra) as backend:
        backend.ask(collection, question, on_event, **options)
    if as_json:
        echo_json({"answer": "".join(answer), **response})
        return
    typer.echo("")
    sources = response.get("sources", [])
    if sources:
        typer.echo("\nsources:")
    for number, source in enumerate(sources, start=1):
        typer.echo(f"  [{number}] {source.get('name') or source['document_id']}, page {source['page']}  "
                   f"(score {source['score']:.3f}, {source['document_id']})")  # fmt: skip
    timings = response.get("timings", {})
    stages = " ".join(f"{name[:-3]} {value:.0f} ms" for name, value in timings.items())
    cached = " (cached)" if response.get("cached") else ""
    typer.echo(f"\n{response.get('model', '')}{cached}: {stages}", err=True)
