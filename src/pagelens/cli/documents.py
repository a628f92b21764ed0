"""`pagelens documents list|info|patch|delete|file|page`, embedded or with `--url` (no model loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pagelens.cli.backends import open_backend
from pagelens.cli.common import (
    CollectionOption,
    DataOption,
    JsonOption,
    KeyOption,
    UrlOption,
    echo_json,
    json_option,
)
from pagelens.errors import InvalidInput

documents_app = typer.Typer(help="The documents of a collection: read, change, download, delete.", no_args_is_help=True)
IdArgument = Annotated[str, typer.Argument(help="The document's id (as `documents list` and `search` show it).")]


@documents_app.command("list")
def list_documents(
    collection: CollectionOption,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """The collection's documents: id, pages, when stored, file name."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        found = backend.documents(collection)
    if as_json:
        echo_json({"documents": found})
        return
    if not found:
        typer.echo(f"no documents in {collection}")
        return
    typer.echo(f"{'id':32}  {'pages':>5}  {'stored (UTC)':24}  name")
    for document in found:
        stored = document.get("created_at") or "-"
        typer.echo(f"{document['id']:32}  {document['pages']:>5}  {stored:24}  {document.get('name') or ''}")


@documents_app.command("info")
def document_info(
    document_id: IdArgument,
    collection: CollectionOption,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """A document as JSON: file name, size, SHA-256, pages, metadata, kind, when it was stored."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        echo_json(backend.document(collection, document_id))


@documents_app.command("patch")
def patch_document(
    document_id: IdArgument,
    collection: CollectionOption,
    metadata: Annotated[
        str,
        typer.Option(help='JSON object merged into the stored metadata; null deletes a key: {"year": null}.'),
    ],
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Change a document's metadata (what search filters read); prints the document."""
    changes = json_option(metadata, "--metadata")
    if not isinstance(changes, dict):
        raise InvalidInput("--metadata must be a JSON object")
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        echo_json(backend.patch_document(collection, document_id, changes))


@documents_app.command("delete")
def delete_document(
    document_id: IdArgument,
    collection: CollectionOption,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Delete a document: its file, record and pages."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        backend.delete_document(collection, document_id)
    typer.echo(f"deleted document {document_id}")


@documents_app.command("file")
def document_file(
    document_id: IdArgument,
    collection: CollectionOption,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write it (default: its file name).")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Download the file as it was stored (an encrypted PDF decrypted, an office document as its PDF)."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        data, name = backend.document_file(collection, document_id)
    target = out or Path(Path(name).name or document_id)
    target.write_bytes(data)
    typer.echo(f"wrote {target} ({len(data):,} bytes)")


@documents_app.command("page")
def page_image(
    document_id: IdArgument,
    page: Annotated[int, typer.Argument(min=1, help="Page number, from 1.")],
    collection: CollectionOption,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG file (default: ID-pN.png).")] = None,
    full: Annotated[bool, typer.Option(help="Full size (else pages over 4 megapixels come downscaled).")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Save a page's image as PNG (the page a search returned, to look at)."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        data = backend.page_png(collection, document_id, page, full=full)
    target = out or Path(f"{document_id[:12]}-p{page}.png")
    target.write_bytes(data)
    typer.echo(f"wrote {target}")
