"""`pagelens index add` and `pagelens search`: collections from the command line, embedded (no
server: the model loads in this process) or against a running server (`--url`)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pagelens.codecs.metadata import parse_metadata
from pagelens.errors import InvalidInput, NotFound, PagelensError
from pagelens.service import MAX_PREFETCH

if TYPE_CHECKING:
    from pagelens.service import Runtime
    from pagelens.settings import Settings

Progress = Callable[[int, int], None]  # (pages stored so far, pages in the document)

index_app = typer.Typer(help="Collections: add PDFs and images.", no_args_is_help=True)

UrlOption = Annotated[str | None, typer.Option(help="A pagelens server; without it, work embedded.")]
KeyOption = Annotated[
    str | None, typer.Option(help="Bearer key for --url (default: PAGELENS_API_KEY or SERVICE_API_KEY).")
]
ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="Model for embedded mode.")]
DataOption = Annotated[
    str | None, typer.Option(help="Data directory for embedded mode (default: PAGELENS_DATA_DIR or the user's).")
]
PREFETCH_HELP = "Fast mode: candidate pages rescored exactly (at least k; default: the store's, 100 on Edge)."


def settings_from_options(**given: object) -> Settings:
    """Settings from the options given (None: not given, so PAGELENS_* variables and defaults
    apply); a bad value exits with one line per setting, no traceback."""
    from pydantic import ValidationError

    from pagelens.settings import Settings

    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as error:
        for problem in error.errors():
            typer.echo(f"error: setting {'.'.join(map(str, problem['loc']))}: {problem['msg']}", err=True)
        raise typer.Exit(2) from error


def connect(url: str, api_key: str | None):
    """A client of the server at `url`, with the given key or the settings' (PAGELENS_API_KEY, SERVICE_API_KEY)."""
    from pagelens.client import Client

    return Client(url, api_key=api_key if api_key is not None else settings_from_options().api_key)


def open_embedded(model: str | None, data_dir: str | None, collection: str, *, create: bool) -> Runtime:
    """A started runtime (the same factory as `pagelens serve`, every PAGELENS_* setting applied)
    with `collection` open. The collection opens first, so a missing one, one another process
    holds open, or one bound to another model fails before the model loads."""
    from pagelens.service import Runtime

    runtime = Runtime(settings_from_options(model=model, data_dir=data_dir))
    try:
        try:
            runtime.collections.check_model_name(collection)
            missing = False
            runtime.collections.index().get(collection)
        except NotFound:
            if not create:
                raise
            missing = True
        runtime.start()
        if missing:
            asyncio.run(runtime.collections.create(collection))
    except BaseException:
        runtime.close()
        raise
    return runtime


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2) from error


@index_app.command("add")
def index_add(
    paths: Annotated[list[Path], typer.Argument(help="PDF, image or office (DOCX, PPTX, XLSX, ODT, ODP) files.")],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with every file.")] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Password of the encrypted PDFs (ignored for other files); never stored or logged."),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Add files to a collection (created if missing). Re-running skips files already stored, so an
    interrupted run resumes where it stopped. Embedded, progress counts each file's pages as they are
    stored (a bar on a terminal, else a line every few seconds); with --url each file is one upload
    request, so progress counts files only."""
    try:
        meta = parse_metadata(metadata, field="--metadata")
    except InvalidInput as error:
        raise typer.BadParameter(error.message) from error
    if url:
        with connect(url, api_key) as client:
            if collection not in {c["name"] for c in client.collections()}:
                client.create_collection(collection)
            add = lambda path, _: client.add_document(  # noqa: E731
                collection, path.read_bytes(), filename=path.name, metadata=meta, password=password
            )
            _add_all(paths, add, per_page=False)
        return
    try:
        runtime = open_embedded(model, data_dir, collection, create=True)
    except PagelensError as error:
        _fail(error)
    try:
        _add_all(
            paths,
            lambda path, progress: asyncio.run(runtime.collections.add_document(
                collection, path.read_bytes(), filename=path.name, metadata=meta, progress=progress,
                password=password,
            )),
            per_page=True,
        )  # fmt: skip
    finally:
        runtime.close()


class _PageProgress:
    """One file's `(pages stored, total)` reports: a progress bar on a terminal; elsewhere (CI logs)
    a `label: N/M pages` line at the start, at the end, and at most every LINE_SECONDS between."""

    LINE_SECONDS = 10.0

    def __init__(self, label: str, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.clock = label, clock
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.bar = None
        self.last_line = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            if self.bar is None:
                self.bar = typer.progressbar(length=total, label=self.label, show_pos=True).__enter__()
            self.bar.update(done - self.bar.pos)
        elif done in (0, total) or self.clock() - self.last_line >= self.LINE_SECONDS:
            self.last_line = self.clock()
            typer.echo(f"{self.label}: {done}/{total} pages")

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _add_all(paths: list[Path], add: Callable[[Path, Progress | None], dict], *, per_page: bool) -> None:
    """`add(path, progress)` each file; progress per page (embedded) or, without `per_page`, per file."""
    failures = 0
    files = nullcontext(paths) if per_page else typer.progressbar(paths, label="indexing", show_pos=True)
    lead = "" if per_page else "\n"  # a line after the file bar's
    with files as listed:
        for number, path in enumerate(listed, start=1):
            progress = _PageProgress(f"[{number}/{len(paths)}] {path}") if per_page else None
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
    collection: Annotated[str, typer.Option("--collection", "-c")],
    k: Annotated[int, typer.Option("-k")] = 5,
    mode: Annotated[str, typer.Option(help="exact | fast")] = "exact",
    prefetch: Annotated[int | None, typer.Option(min=1, max=MAX_PREFETCH, help=PREFETCH_HELP)] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    model: ModelOption = None,
    data_dir: DataOption = None,
) -> None:
    """Search a collection; prints rank, score, document and page."""
    try:
        if url:
            with connect(url, api_key) as client:
                results = client.search(collection, query, k=k, mode=mode, prefetch=prefetch)
        else:
            runtime = open_embedded(model, data_dir, collection, create=False)
            try:
                hits = asyncio.run(runtime.collections.search(collection, query, k=k, mode=mode, prefetch=prefetch))
                results = [
                    {"document_id": h.document_id, "page": h.page, "score": h.score, "name": h.name} for h in hits
                ]
            finally:
                runtime.close()
    except PagelensError as error:
        _fail(error)
    typer.echo(f"{'rank':>4}  {'score':>9}  {'page':>4}  document")
    for rank, hit in enumerate(results, start=1):
        typer.echo(
            f"{rank:4d}  {hit['score']:9.3f}  {hit['page']:4d}  {hit.get('name') or ''} ({hit['document_id'][:12]})"
        )
