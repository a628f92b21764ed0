"""`pagelens collections list|create|info|delete|export|import`, embedded or with `--url`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pagelens.cli.backends import open_backend
from pagelens.cli.common import DataOption, JsonOption, KeyOption, ModelOption, UrlOption, echo_json

collections_app = typer.Typer(
    help="Collections: each holds the pages of its documents, bound to the model that embedded them.",
    no_args_is_help=True,
)
NameArgument = Annotated[str, typer.Argument(help="The collection's name (letters, digits, '_', '-', '.').")]


def _model(summary: dict) -> str:
    binding = summary.get("model")
    if not binding:
        return "(none yet)"
    pooling = f", pool {binding['pool_factor']}" if binding.get("pool_factor") else ""
    return f"{binding['model']}{pooling}"


@collections_app.command("list")
def list_collections(
    as_json: JsonOption = False, url: UrlOption = None, api_key: KeyOption = None, data_dir: DataOption = None
) -> None:
    """Every collection: documents, pages and the model it is bound to (no model loads)."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        found = backend.collections()
    if as_json:
        echo_json({"collections": found})
        return
    if not found:
        typer.echo("no collections")
        return
    typer.echo(f"{'name':20}  {'documents':>9}  {'pages':>7}  model")
    for summary in found:
        if "error" in summary:
            typer.echo(f"{summary['name']:20}  unreadable: {summary['error']['message']}")
            continue
        note = "" if summary.get("compatible", True) else f"  (not usable here: {summary['mismatch']})"
        typer.echo(f"{summary['name']:20}  {summary['documents']:>9}  {summary['pages']:>7}  {_model(summary)}{note}")


@collections_app.command("create")
def create_collection(
    name: NameArgument,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Create an empty collection bound to the model (the server's, or --model embedded, which loads it)."""
    with open_backend(url, api_key, model=model, data_dir=data_dir) as backend:
        summary = backend.create_collection(name)
    typer.echo(f"created collection {summary['name']} for {_model(summary)}")


@collections_app.command("info")
def collection_info(name: NameArgument, url: UrlOption = None, api_key: KeyOption = None, data_dir: DataOption = None):
    """A collection's summary as JSON: documents, pages, model binding, whether it is usable here."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        echo_json(backend.collection(name))


@collections_app.command("delete")
def delete_collection(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Delete a collection with its documents and pages (its running ingest jobs are cancelled)."""
    if not yes:
        typer.confirm(f"delete collection {name!r} and all its documents?", abort=True)
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        backend.delete_collection(name)
    typer.echo(f"deleted collection {name}")


@collections_app.command("export")
def export_collection(
    name: NameArgument,
    file: Annotated[Path, typer.Argument(help="The archive to write (replaced only once complete).")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Write a collection as one portable snapshot archive (a tar): its documents' files and records,
    every page's stored vectors and its model binding. No model loads."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        backend.export_collection(name, file)
    typer.echo(f"exported collection {name} to {file} ({file.stat().st_size:,} bytes)")


@collections_app.command("import")
def import_collection(
    file: Annotated[Path, typer.Argument(help="A snapshot archive written by `collections export`.")],
    as_name: Annotated[
        str | None, typer.Option("--as", help="The new collection's name (default: the archive's).")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Create a collection from a snapshot archive, into Qdrant Edge or a Qdrant server, all or nothing
    (a bad archive is refused naming what is wrong, and nothing is created). No model loads: the
    collection keeps the archive's model binding."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        summary = backend.import_collection(file, as_name)
    note = "" if summary.get("compatible", True) else f"; not usable by this model: {summary['mismatch']}"
    typer.echo(
        f"imported collection {summary['name']}: {summary['documents']} documents, {summary['pages']} pages{note}"
    )
