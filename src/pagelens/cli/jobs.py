"""`pagelens jobs list|info|watch|cancel`: ingest jobs (every upload to a server is one). With
`--url`, the server's; embedded, the records under `<data_dir>/_jobs` (read without changing them:
a server may be running them)."""

from __future__ import annotations

from typing import Annotated

import typer

from pagelens.cli.backends import open_backend
from pagelens.cli.common import DataOption, JsonOption, KeyOption, UrlOption, echo_json
from pagelens.cli.progress import PageProgress, follow_job

jobs_app = typer.Typer(
    help="Ingest jobs: queued -> running -> done | failed | cancelled (uploads with --no-wait survive a restart).",
    no_args_is_help=True,
)
IdArgument = Annotated[str, typer.Argument(help="The job's id.")]


def _pages(job: dict) -> str:
    total = job.get("pages_total")
    return f"{job['pages_done']}/{total if total is not None else '?'}"


@jobs_app.command("list")
def list_jobs(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection's.")] = None,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state (queued, running, done, ...).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    data_dir: DataOption = None,
) -> None:
    """Ingest jobs, oldest first (finished ones are kept for PAGELENS_JOB_RETENTION_HOURS)."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        found = backend.jobs(collection=collection, state=state)
    if as_json:
        echo_json({"jobs": found})
        return
    if not found:
        typer.echo("no ingest jobs")
        return
    typer.echo(f"{'id':32}  {'state':9}  {'pages':>9}  {'collection':16}  file")
    for job in found:
        typer.echo(f"{job['id']:32}  {job['state']:9}  {_pages(job):>9}  {job['collection']:16}  {job['filename']}")


@jobs_app.command("info")
def job_info(job_id: IdArgument, url: UrlOption = None, api_key: KeyOption = None, data_dir: DataOption = None):
    """A job as JSON: state, pages done of the total, the document it stores, its error if it failed."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        echo_json(backend.job(job_id))


@jobs_app.command("watch")
def watch_job(job_id: IdArgument, url: UrlOption = None, api_key: KeyOption = None, data_dir: DataOption = None):
    """Follow a job's pages until it ends.

    A progress bar (with --url, from the server's event stream); exit code 0 when the job is done,
    1 when it failed or was cancelled. Ctrl-C stops only the watching."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        job = follow_job(backend.job_updates(job_id), PageProgress(f"{job_id[:12]}"))
    _report(job)


@jobs_app.command("cancel")
def cancel_job(job_id: IdArgument, url: UrlOption = None, api_key: KeyOption = None, data_dir: DataOption = None):
    """Cancel a queued or running job.

    It stops within a page and nothing of its document stays. Embedded, only a job no server is
    running (one a restart interrupted); a server's job is cancelled through it (--url)."""
    with open_backend(url, api_key, data_dir=data_dir) as backend:
        job = backend.cancel_job(job_id)
    typer.echo(f"ingest job {job['id']}: {job['state']}")


def _report(job: dict) -> None:
    where = f"{job['filename']} into {job['collection']}"
    if job["state"] == "done":
        stored = "stored" if job.get("created") else "already stored"
        typer.echo(f"ingest job {job['id']} done: {where}, {job['pages_total']} pages {stored} ({job['document_id']})")
        return
    error = job.get("error") or {}
    typer.echo(f"ingest job {job['id']} {job['state']}: {where}: {error.get('message', '')}", err=True)
    raise typer.Exit(1)
