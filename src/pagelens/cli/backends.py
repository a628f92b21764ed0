"""Where a command's work happens, written once for both modes: `Remote` (a server, `--url`, over
`pagelens.client.Client`) and `Embedded` (this process, over the service `Runtime` on `--data-dir`).
Both have the same methods and return the server's JSON shapes.

Embedded, a collection opens before any model loads (a missing collection, one another process
holds, or one bound to another model fails at once), and only what needs the model loads it
(creating a collection, adding pages, searching): listing, inspecting, deleting, documents and
jobs never do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagelens.cli.common import settings_from_options
from pagelens.errors import Conflict, InvalidInput, NotFound, PagelensError

if TYPE_CHECKING:
    from pagelens.client import Client
    from pagelens.settings import Settings

Progress = Callable[[int, int], None]  # (pages stored so far, pages in the document)
OnEvent = Callable[[str, dict], None]  # an ask's events as they come: sources, token ..., done
FINISHED = ("done", "failed", "cancelled")
WATCH_POLL_SECONDS = 0.5  # how often embedded `jobs watch` reads a job's record


@contextmanager
def open_backend(
    url: str | None, api_key: str | None, *, model: str | None = None, data_dir: str | None = None, **options: Any
):
    """`Remote` when `url` is given, else `Embedded` (with more settings `options`, None: unset);
    closed when the block ends."""
    backend: Remote | Embedded
    if url:
        backend = Remote(url, api_key if api_key is not None else settings_from_options().api_key)
    else:
        backend = Embedded(settings_from_options(model=model, data_dir=data_dir, **options))
    try:
        yield backend
    finally:
        backend.close()


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; else `InvalidInput` saying how to write it."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise InvalidInput(f"--url {url!r} is malformed ({error}); give it as http://host:port") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"--url {url!r} is malformed; give it as http://host:port")
    return url


class Remote:
    """A pagelens server. Answers have no time limit (an upload waits for its ingest); connecting
    fails within seconds, after two retries."""

    embedded = False

    def __init__(self, url: str, api_key: str | None) -> None:
        from pagelens.client import Client

        self.client: Client = Client(check_url(url), api_key=api_key, timeout=None, connect_timeout=10, max_retries=2)

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- collections
    def collections(self) -> list[dict]:
        return self.client.collections()

    def create_collection(self, name: str) -> dict:
        return self.client.create_collection(name)

    def ensure_collection(self, name: str) -> None:
        """Create `name` unless it exists (`index add`)."""
        if name not in {c["name"] for c in self.client.collections()}:
            with suppress(Conflict):  # created meanwhile
                self.client.create_collection(name)

    def collection(self, name: str) -> dict:
        return self.client.collection(name)

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    def export_collection(self, name: str, path: Path) -> Path:
        return self.client.export_collection(name, path)

    def import_collection(self, path: Path, name: str | None) -> dict:
        return self.client.import_collection(path, name=name)

    # ---------------------------------------------------------------- documents
    def add_document(self, collection: str, data: bytes, *, progress: Progress | None = None, **fields: Any) -> dict:
        """Upload and wait until stored (`progress` is not reported: one request per file)."""
        return self.client.add_document(collection, data, **fields)

    def documents(self, collection: str) -> list[dict]:
        return self.client.documents(collection)

    def document(self, collection: str, document_id: str) -> dict:
        return self.client.document(collection, document_id)

    def patch_document(self, collection: str, document_id: str, metadata: Any) -> dict:
        return self.client.patch_document(collection, document_id, metadata)

    def delete_document(self, collection: str, document_id: str) -> None:
        self.client.delete_document(collection, document_id)

    def document_file(self, collection: str, document_id: str) -> tuple[bytes, str]:
        """The uploaded bytes and the file's name."""
        name = self.client.document(collection, document_id)["name"]
        return self.client.document_file(collection, document_id), name

    def page_png(self, collection: str, document_id: str, page: int, *, full: bool = False) -> bytes:
        return self.client.page_png(collection, document_id, page, full=full)

    def search(self, collection: str, query: str, **options: Any) -> list[dict]:
        return self.client.search(collection, query, **options)

    def ask(self, collection: str, question: str, on_event: OnEvent, **options: Any) -> None:
        """The server's answer, streamed: each event to `on_event` as it arrives."""
        for event, data in self.client.ask(collection, question, stream=True, **options):
            on_event(event, data)

    def heatmap(self, collection: str, document_id: str, page: int, query: str) -> dict:
        return self.client.heatmap(collection, document_id, page, query)

    def heatmap_png(self, collection: str, document_id: str, page: int, query: str, *, token: int | None) -> bytes:
        return self.client.heatmap_png(collection, document_id, page, query, token=token)

    # ---------------------------------------------------------------- jobs
    def jobs(self, collection: str | None = None, state: str | None = None) -> list[dict]:
        return self.client.jobs(collection=collection, state=state)

    def job(self, job_id: str) -> dict:
        return self.client.job(job_id)

    def cancel_job(self, job_id: str) -> dict:
        return self.client.cancel_job(job_id)

    def job_updates(self, job_id: str) -> Iterator[dict]:
        """The job each time it changes (server-sent events), the last one finished."""
        for _event, job in self.client.job_events(job_id):
            yield job


class Embedded:
    """This process, on the settings' data directory (or Qdrant server). The model loads only for
    what needs it."""

    embedded = True

    def __init__(self, settings: Settings) -> None:
        from pagelens.service import Runtime, resumable_documents

        self.settings = settings
        self.runtime = Runtime(settings)
        # pages of durable ingest jobs waiting for a server to resume them stay when a collection opens here
        self.runtime.collections.resumable = lambda name: resumable_documents(settings.data_dir, name)
        self._jobs: Any = None

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        self.runtime.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run(coroutine)

    def _start(self, collection: str, *, create: bool = False) -> None:
        """Open `collection` (created if missing and `create`), then load the model: a missing
        collection, one another process holds, or one bound to another model fails first."""
        service = self.runtime.collections
        service.check_model_name(collection)
        try:
            service.index().get(collection)
            missing = False
        except NotFound:
            if not create:
                raise
            missing = True
        self.runtime.start()
        if missing:
            self._run(service.create(collection))

    # ---------------------------------------------------------------- collections
    def collections(self) -> list[dict]:
        return self._run(self.runtime.collections.list())

    def create_collection(self, name: str) -> dict:
        with suppress(NotFound):
            self.runtime.collections.index().get(name)  # a bad name or a taken one fails before the model loads
            raise Conflict(f"collection {name!r} already exists")
        self.runtime.start()
        return self._run(self.runtime.collections.create(name))

    def ensure_collection(self, name: str) -> None:
        self._start(name, create=True)

    def collection(self, name: str) -> dict:
        return self._run(self.runtime.collections.info(name))

    def delete_collection(self, name: str) -> None:
        self._run(self.runtime.collections.delete(name))

    def export_collection(self, name: str, path: Path) -> Path:
        self._run(self.runtime.collections.export(name, path))
        return path

    def import_collection(self, path: Path, name: str | None) -> dict:
        return self._run(self.runtime.collections.import_(path, name))

    # ---------------------------------------------------------------- documents
    def add_document(self, collection: str, data: bytes, *, progress: Progress | None = None, **fields: Any) -> dict:
        """Store a file's pages (after `ensure_collection`), reporting each page stored to `progress`."""
        fields.setdefault("metadata", {})
        return self._run(self.runtime.collections.add_document(collection, data, progress=progress, **fields))

    def documents(self, collection: str) -> list[dict]:
        return self._run(self.runtime.collections.documents(collection))

    def document(self, collection: str, document_id: str) -> dict:
        return self._run(self.runtime.collections.document(collection, document_id))

    def patch_document(self, collection: str, document_id: str, metadata: Any) -> dict:
        return self._run(self.runtime.collections.patch_document(collection, document_id, metadata))

    def delete_document(self, collection: str, document_id: str) -> None:
        self._run(self.runtime.collections.delete_document(collection, document_id))

    def document_file(self, collection: str, document_id: str) -> tuple[bytes, str]:
        data, _media_type, name = self._run(self.runtime.collections.document_file(collection, document_id))
        return data, name

    def page_png(self, collection: str, document_id: str, page: int, *, full: bool = False) -> bytes:
        return self._run(self.runtime.collections.page_png(collection, document_id, page, full=full))

    def search(self, collection: str, query: str, **options: Any) -> list[dict]:
        self._start(collection)
        hits = self._run(self.runtime.collections.search(collection, query, **options))
        return [{"document_id": h.document_id, "page": h.page, "score": h.score, "name": h.name,
                 "metadata": h.metadata} for h in hits]  # fmt: skip

    def ask(self, collection: str, question: str, on_event: OnEvent, **options: Any) -> None:
        """An answer from the settings' answer model over this process's collection, each event to
        `on_event` as it comes. No answer model configured: GeneratorNotConfigured before any model loads."""
        from pagelens.service import check_answer_settings

        check_answer_settings(self.settings)
        self._start(collection)

        async def run() -> None:
            asking = await self.runtime.asks.open(collection, question, **options)
            on_event("sources", {"sources": asking.sources})
            async for event, data in asking.events():
                on_event(event, data)

        self._run(run())

    def heatmap(self, collection: str, document_id: str, page: int, query: str) -> dict:
        from pagelens.service import HeatmapService

        self._start(collection)
        return self._run(HeatmapService(self.runtime.collections).heatmap(collection, document_id, page, query))

    def heatmap_png(self, collection: str, document_id: str, page: int, query: str, *, token: int | None) -> bytes:
        from pagelens.service import HeatmapService

        self._start(collection)
        heatmaps = HeatmapService(self.runtime.collections)
        return self._run(heatmaps.overlay_png(collection, document_id, page, query, token=token))

    # ---------------------------------------------------------------- jobs (records under <data_dir>/_jobs)
    def jobs(self, collection: str | None = None, state: str | None = None) -> list[dict]:
        from pagelens.service import stored_jobs

        return [job.public() for job in stored_jobs(self.settings.data_dir, collection=collection, state=state)]

    def job(self, job_id: str) -> dict:
        from pagelens.service import stored_job

        return stored_job(self.settings.data_dir, job_id).public()

    def cancel_job(self, job_id: str) -> dict:
        """Cancel a job no server is running (one a restart interrupted); `Conflict` when a server
        runs this data directory's jobs: only it can stop them."""
        from pagelens.service import JobService

        collection = self.job(job_id)["collection"]  # NotFound first
        try:
            self._jobs = JobService(self.settings, self.runtime.collections, exclusive=True)
        except Conflict:
            raise Conflict(
                f"ingest job {job_id} belongs to a pagelens server running on {self.settings.data_dir}; "
                f"cancel it through that server: pagelens jobs cancel {job_id} --url URL"
            ) from None
        job = self._jobs.cancel(job_id).public()
        with suppress(PagelensError):  # opening the collection removes the pages the job had stored
            self.runtime.collections.index().get(collection)
        return job

    def job_updates(self, job_id: str) -> Iterator[dict]:
        """The job's record each time it changes, until it has finished; a job no server runs
        cannot progress, so watching it is refused."""
        from pagelens.service import jobs_running_elsewhere

        last = self.job(job_id)
        yield last
        while last["state"] not in FINISHED:
            if not jobs_running_elsewhere(self.settings.data_dir):
                raise PagelensError(
                    f"ingest job {job_id} is {last['state']}, but no server runs this data directory's jobs "
                    f"({self.settings.data_dir}): start pagelens serve on it to resume the job, or cancel it"
                )
            time.sleep(WATCH_POLL_SECONDS)
            current = self.job(job_id)
            if current != last:
                last = current
                yield current
