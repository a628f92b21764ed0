"""`pagelens heatmap`: a query's similarity map over a stored page, as a PNG (or the maps as JSON),
embedded or with `--url`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pagelens.cli.backends import open_backend
from pagelens.cli.common import CollectionOption, DataOption, KeyOption, ModelOption, UrlOption, echo_json


def heatmap(
    document_id: Annotated[str, typer.Argument(help="The document's id (as `documents list` and `search` show it).")],
    page: Annotated[int, typer.Argument(min=1, help="Page number, from 1.")],
    collection: CollectionOption,
    query: Annotated[str, typer.Option("--query", "-q", help="The query whose map to draw.")],
    token: Annotated[
        int | None,
        typer.Option(min=0, help="Draw this token's map (an index into the --json tokens), not the combined one."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG file (default: ID-pN-heatmap.png).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the maps (tokens, grid [h, w], maps, combined, ...) instead.")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Save the page with the query's similarity map blended over it (red where the page answers the query)."""
    with open_backend(url, api_key, model=model, data_dir=data_dir) as backend:
        if as_json:
            echo_json(backend.heatmap(collection, document_id, page, query))
            return
        data = backend.heatmap_png(collection, document_id, page, query, token=token)
    target = out or Path(f"{document_id[:12]}-p{page}-heatmap.png")
    target.write_bytes(data)
    typer.echo(f"wrote {target}")
