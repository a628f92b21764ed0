"""`pagelens index add` and `pagelens search`: fill a collection and search it, embedded (the model
loads in this process) or through a running server (`--url`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from pagelens.cli.backends import Progress, open_backend
from pagelens.cli.common import (
    CollectionOption,
    DataOption,
    KeyOption,
    ModelOption,
    UrlOption,
    echo_json,
    json_option,
)
from pagelens.cli.progress import PageProgress, follow_job
from pagelens.codecs.metadata import check_filter, parse_metadata
from pagelens.errors import InvalidInput, PagelensError
from pagelens.service import MAX_PREFETCH

index_app = typer.Typer(help="Fill collections with PDFs, images and office documents.", no_args_is_help=True)

PREFETCH_HELP = "Fast mode: candidate pages rescored exactly (at least k; default: the store's, 100 on Edge)."
FILTER_HELP = (
    'Metadata filter, JSON: {"team": "finance"} (equality), {"team": {"$in": ["a", "b"]}}, '
    '{"year": {"$gte": 2020, "$lt": 2024}}, {"date": {"$gte": "2024-01-01"}} (ISO dates); ANDed.'
)


@index_app.command("add")
def index_add(
    paths: Annotated[list[Path], typer.Argument(help="PDF, image or office (DOCX, PPTX, XLSX, ODT, ODP) files.")],
    collection: CollectionOption,
    metadata: Annotated[
        str | None, typer.Option(help='JSON object stored with every file, e.g. {"team": "x"}.')
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Password of the encrypted PDFs (ignored for other files); never stored or logged."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="--no-wait (with --url only): each file becomes a background ingest job on the server, which "
            "survives a server restart; its pages are followed here with a progress bar, and Ctrl-C stops only "
            "the following (see pagelens jobs). Embedded, the ingest runs in this process, so it always waits.",
        ),
    ] = True,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Add files to a collection (created if missing).

    Re-running skips files already stored, so an interrupted run resumes where it stopped. Progress
    counts each file's pages as they are stored (a bar on a terminal, else a line every few seconds),
    except with --url and --wait, where each file is one request and progress counts files. Uploads
    over --url have no time limit."""
    meta = parse_metadata(metadata, field="--metadata")
    if not wait and not url:
        raise InvalidInput("--no-wait needs --url: embedded, the ingest runs in this process, which must wait for it")
    with open_backend(url, api_key, model=model, data_dir=data_dir) as backend:
        backend.ensure_collection(collection)
        fields = {"metadata": meta, "password": password}
        if wait:

            def add(path: Path, progress: Progress | None) -> dict:
                data = path.read_bytes()
                return backend.add_document(collection, data, filename=path.name, progress=progress, **fields)

            _add_all(paths, add, per_page=backend.embedded)
            return
        client = backend.client  # type: ignore[union-attr]

        def queue_and_follow(path: Path, progress: Progress | None) -> dict:
            from pagelens.client import job_error

            job = client.add_document(collection, path.read_bytes(), filename=path.name, wait=False, **fields)
            typer.echo(f"{path}: ingest job {job['id']} queued")
            assert isinstance(progress, PageProgress)
            job = follow_job((event for _name, event in client.job_events(job["id"])), progress)
            if job["state"] != "done":
                raise job_error(job)
            return {"id": job["document_id"], "pages": job["pages_total"], "created": job["created"]}

        _add_all(paths, queue_and_follow, per_page=True)


def _add_all(paths: list[Path], add: Callable[[Path, Progress | None], dict], *, per_page: bool) -> None:
    """`add(path, progress)` each file; progress per page or, without `per_page`, per file. A file that
    fails is reported and the others go on; exit code 1 if any failed."""
    failures = 0
    files = nullcontext(paths) if per_page else typer.progressbar(paths, label="indexing", show_pos=True)
    lead = "" if per_page else "\n"  # a line after the file bar's
    with files as listed:
        for number, path in enumerate(listed, start=1):
            progress = PageProgress(f"[{number}/{len(paths)}] {path}") if per_page else None
            try:
                record = add(path, progress)
            except (PagelensError, OSError) as error:
                failures += 1
                typer.echo(f"{lead}{path}: {error}", err=True)
                continue
            finally:
                if progress is not None:
                    progress.finish()
            state = "added" if record["created"] else "already stored"
            typer.echo(f"{lead}{path}: {record['pages']} pages, {state} ({record['id']})")
    if failures:
        raise typer.Exit(1)


def search(
    query: Annotated[str, typer.Argument()],
    collection: CollectionOption,
    k: Annotated[int, typer.Option("-k", min=1, help="How many pages.")] = 5,
    mode: Annotated[str, typer.Option(help="exact | fast")] = "exact",
    prefetch: Annotated[int | None, typer.Option(min=1, max=MAX_PREFETCH, help=PREFETCH_HELP)] = None,
    filter: Annotated[str | None, typer.Option("--filter", help=FILTER_HELP)] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"results": [{document_id, page, score, name, metadata}]}.')
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Search a collection; prints rank, score, page and document (name and id)."""
    conditions = json_option(filter, "--filter")
    check_filter(conditions, field="--filter")  # before any model loads or request leaves
    with open_backend(url, api_key, model=model, data_dir=data_dir) as backend:
        results = backend.search(collection, query, k=k, mode=mode, prefetch=prefetch, filter=conditions)
    if as_json:
        echo_json({"results": results})
        return
    typer.echo(f"{'rank':>4}  {'score':>9}  {'page':>4}  document")
    for rank, hit in enumerate(results, start=1):
        typer.echo(f"{rank:4d}  {hit['score']:9.3f}  {hit['page']:4d}  {hit.get('name') or ''} ({hit['document_id']})")
