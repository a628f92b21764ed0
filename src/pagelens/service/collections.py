"""The collection service: create, list, fill, search and delete collections, each bound to the
model that filled it. The HTTP routes and the embedded CLI both call this.

Binding rules (the record: index/binding.py):
- a new collection records the loaded model;
- a model that embeds into another vector space (model, revision, family, output kind) may
  neither add pages nor search: `ModelMismatch` (409) naming both models;
- the same model with another token pooling may search, but not add pages (a collection keeps
  one pooling);
- a collection made before bindings existed is adopted by the first model that uses it (logged).
Listing, inspecting, reading pages and deleting need no model and work under any.

Every blocking call (opening a collection and its mirror, rendering, storing, deleting, encoding
page images) runs on this service's thread pools, never on the event loop: ingests on their
own pool, so a burst of uploads leaves the pool that searches and reads use free; snapshot
exports and imports (index/snapshot.py) on a third, as a slow download holds its thread.

Snapshots need no model: an archive carries the binding of the model that filled it, and the
imported collection keeps it, so the binding rules above guard it as they guard the original (a
server running another model lists it as incompatible and refuses to search or fill it). Making
an import depend on the model loaded would only stop a backup from being restored on a server
that runs another model, or whose model is still loading.

Live recall: a sampled fraction (`settings.recall_sample`) of fast searches is re-run exactly in
the background (service/recall.py), each collection's fast-mode recall@k is measured from them and
its default prefetch adapts to keep it at `settings.target_recall` (index/recall.py); `info` and
`recall_report` (the /metrics gauges) show both.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pagelens.codecs.metadata import check_filter, check_metadata
from pagelens.errors import ModelMismatch, NotFound, PagelensError
from pagelens.index.binding import ModelBinding, model_reference
from pagelens.index.office import OfficeConverter
from pagelens.index.pages import MAX_PREFETCH, SearchHit
from pagelens.rag.cache import QueryEmbeddingCache
from pagelens.service.recall import RecallSampler

if TYPE_CHECKING:
    from PIL import Image

    from pagelens.index.collections import Collection, Collections, Progress
    from pagelens.models.embedder import EmbedderInfo
    from pagelens.service.embeddings import EmbeddingService, StageTimings
    from pagelens.settings import Settings

__all__ = ["MAX_PREFETCH", "CollectionService", "SearchHit", "binding_of"]

log = logging.getLogger(__name__)

READ_WORKERS = 4  # opening collections, searches, lists, page images, deletes
SNAPSHOT_WORKERS = 4  # exports (each holds its thread while its client downloads) and imports


def binding_of(info: EmbedderInfo) -> ModelBinding:
    """The binding a collection filled by this model records."""
    return ModelBinding(
        model=model_reference(info.model), revision=info.revision, family=info.family,
        multi_vector=info.multi_vector, dim=info.dim, pool_factor=info.pool_factor,
    )  # fmt: skip


class CollectionService:
    """Collections under `settings.data_dir` (Qdrant Edge) or on `settings.qdrant_url`, opened on
    first use. `embeddings()` returns the running EmbeddingService or raises `ModelNotReady`."""

    def __init__(
        self,
        settings: Settings,
        embeddings: Callable[[], EmbeddingService],
        *,
        collections: Collections | None = None,
    ) -> None:
        self.settings = settings
        self._embeddings = embeddings
        self._collections = collections
        self._open_lock = threading.Lock()
        self.on_delete: Callable[[str], None] = lambda name: None
        self.resumable: Callable[[str], set[str]] = lambda name: set()  # documents whose ingests will resume
        self._office = OfficeConverter(timeout=settings.office_timeout_seconds)
        self._reads = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="pagelens-collections")
        self._ingests = ThreadPoolExecutor(settings.ingest_workers, thread_name_prefix="pagelens-ingest")
        self._snapshots = ThreadPoolExecutor(SNAPSHOT_WORKERS, thread_name_prefix="pagelens-snapshot")
        self._generations: defaultdict[str, int] = defaultdict(int)
        self.query_cache = QueryEmbeddingCache(settings.query_cache_size)
        self.recall_sampler = RecallSampler(settings.recall_sample)

    def generation(self, name: str) -> int:
        """Changes to collection `name` in this process (bumped once each is done; the answer cache's key)."""
        return self._generations[name]

    def _changed(self, name: str) -> None:
        self._generations[name] += 1

    # ------------------------------------------------------------------ plumbing
    def index(self) -> Collections:
        """The index's collections, opened on first use (blocking)."""
        with self._open_lock:
            if self._collections is None:
                from pagelens.index.collections import Collections

                self._collections = Collections.from_settings(self.settings, resumable=lambda c: self.resumable(c))
            return self._collections

    async def _run(
        self, function: Callable[..., Any], *args: Any, ingest: bool = False, snapshot: bool = False, **kwargs: Any
    ) -> Any:
        pool = self._ingests if ingest else self._snapshots if snapshot else self._reads
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: function(*args, **kwargs))

    def close(self) -> None:
        self.recall_sampler.close()
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._snapshots.shutdown(wait=False, cancel_futures=True)
        self._ingests.shutdown(wait=True, cancel_futures=True)
        with self._open_lock:
            if self._collections is not None:
                self._collections.close()
                self._collections = None

    # ------------------------------------------------------------------ binding
    def _model_binding(self) -> ModelBinding:
        return binding_of(self._embeddings().info)

    def bound(self, name: str, *, for_ingest: bool) -> Collection:
        """Open `name` for the loaded model (blocking): adopt it if it has no binding; refuse it with
        `ModelMismatch` if it holds another model's vectors (or, `for_ingest`, another pooling)."""
        current = self._model_binding()
        collection = self.index().get(name)
        recorded = collection.binding
        if recorded is None:
            self.index().bind(name, current)
            log.warning("collection %r had no model binding; adopted by %s", name, current.describe())
            return collection
        problems = recorded.space_differences(current)
        if problems:
            raise ModelMismatch(
                f"collection {name!r} holds vectors of {recorded.describe()}, but this server runs "
                f"{current.describe()} ({'; '.join(problems)}); serve {recorded.model} to use it, or "
                "create another collection for this model"
            )
        if for_ingest and recorded.pool_factor != current.pool_factor:
            raise ModelMismatch(
                f"collection {name!r} stores pages with pool factor {recorded.pool_factor}, but this server "
                f"pools with {current.pool_factor}; set the pool factor to {recorded.pool_factor} to add pages"
            )
        return collection

    def check_model_name(self, name: str) -> None:
        """Refuse `name` before any model loads when its binding names another model than the
        settings' (blocking; the embedded CLI's early check). Missing collections pass."""
        try:
            recorded = self.index().get(name).binding
        except NotFound:
            return
        if recorded is not None and recorded.model != model_reference(self.settings.model):
            raise ModelMismatch(
                f"collection {name!r} holds vectors of {recorded.describe()}, not of {self.settings.model}; "
                f"use --model {recorded.model}, or another collection"
            )

    def _summary(self, collection: Collection) -> dict[str, Any]:
        """`{name, documents, pages, model, compatible, mismatch, recovered, fast_search}`: `model`
        the binding (None if unbound), `mismatch` why the loaded model cannot use it (None when it
        can), `recovered` what opening its store had to give up (None when nothing), `fast_search`
        the fast mode's default prefetch and measured recall (index/recall.py `AdaptivePrefetch.stats`,
        plus the sample rate; None where the fast mode is exact)."""
        binding, current = collection.binding, self._current_binding()
        mismatch = None
        if binding is not None and current is not None:
            mismatch = "; ".join(binding.space_differences(current)) or None
        return {
            "name": collection.name,
            "documents": len(collection.documents()),
            "pages": collection.store.page_count(),
            "model": binding.to_dict() if binding is not None else None,
            "compatible": mismatch is None,
            "mismatch": mismatch,
            "recovered": collection.store.recovered,
            "fast_search": self._fast_search(collection),
        }

    def _fast_search(self, collection: Collection) -> dict[str, Any] | None:
        if not collection.fast_is_approximate:
            return None
        return collection.recall.stats() | {"sample_rate": self.recall_sampler.rate}

    def recall_report(self) -> dict[str, Any]:
        """`{"collections": {name: fast_search}, "sampler": {rate, sampled, dropped, checked, failed,
        queued}}` over the collections open now (never opens one): what /metrics exports."""
        with self._open_lock:
            collections = self._collections
        opened = collections.opened() if collections is not None else []
        found = {c.name: stats for c in opened if (stats := self._fast_search(c)) is not None}
        return {"collections": found, "sampler": self.recall_sampler.stats()}

    def _current_binding(self) -> ModelBinding | None:
        try:
            return self._model_binding()
        except PagelensError:
            return None  # no model running: nothing to compare with

    # ------------------------------------------------------------------ collections
    async def create(self, name: str) -> dict[str, Any]:
        """Create `name`, bound to the loaded model; `Conflict` if it exists."""
        binding = self._model_binding()
        try:
            return await self._run(lambda: self._summary(self.index().create(name, binding)))
        finally:
            self._changed(name)

    async def list(self) -> list[dict[str, Any]]:
        """Every collection's summary, by name. One that cannot be opened is listed with its `error`."""

        def summaries() -> list[dict[str, Any]]:
            found = []
            for name in self.index().names():
                try:
                    found.append(self._summary(self.index().get(name)))
                except PagelensError as error:
                    found.append({"name": name, "error": {"type": error.error_type, "message": error.message}})
            return found

        return await self._run(summaries)

    async def info(self, name: str) -> dict[str, Any]:
        return await self._run(lambda: self._summary(self.index().get(name)))

    async def delete(self, name: str) -> None:
        """Delete a collection; `on_delete(name)` runs first (the job service cancels its jobs)."""
        self.on_delete(name)
        try:
            await self._run(self.index().delete, name)
        finally:
            self._changed(name)

    # ------------------------------------------------------------------ documents
    async def add_document(
        self,
        name: str,
        data: bytes,
        *,
        filename: str,
        metadata: dict[str, Any],
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        """Store a PDF, image or office document's pages: `{"id", "pages", "created", "metadata_kept"}`
        (created false: same bytes stored before, whose stored metadata was kept: `metadata_kept`
        true; PATCH changes it). An encrypted PDF needs its `password` (ignored otherwise; never
        stored or logged: the PDF is kept decrypted). Office documents are converted to PDF by
        LibreOffice within `settings.office_timeout_seconds`. Setting `cancel` (its client left) stops
        the ingest between pages, mid-render or mid-conversion: nothing is stored."""
        check_metadata(metadata)
        self._embeddings()
        return await self._run(
            self.ingest, name, data, filename=filename, metadata=metadata, progress=progress, cancel=cancel,
            password=password, ingest=True,
        )  # fmt: skip

    def ingest(
        self,
        name: str,
        data: bytes | Path,
        *,
        filename: str,
        metadata: dict[str, Any],
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        password: str | None = None,
        keep_partial: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """`add_document`, blocking (an ingest job's thread, or the service's ingest pool).
        `keep_partial()` true when the ingest stops: its stored pages stay, to be resumed."""
        embeddings = self._embeddings()
        collection = self.bound(name, for_ingest=True)
        try:
            record = collection.add(
                data, name=filename, metadata=metadata, embed=embeddings.engine.embed_pages,
                dpi=self.settings.pdf_dpi, render_pixels=embeddings.info.page_pixels, progress=progress, cancel=cancel,
                max_pages=self.settings.max_document_pages, password=password or None, keep_partial=keep_partial,
                office=self._office,
            )  # fmt: skip
        finally:
            self._changed(name)
        created = record["created"]
        return {"id": record["id"], "pages": record["pages"], "created": created, "metadata_kept": not created}

    def inspect(self, name: str, data: bytes | Path, *, password: str | None = None) -> tuple[str, int | None]:
        """`(kind, pages)` of an upload for collection `name`, checked as an ingest would check it
        (the collection exists and takes this model's pages; a PDF, image or office document this
        server can convert; readable; within the page limit), without rendering a page. An office
        document's pages are unknown (None) until the ingest converts it. Blocking."""
        self._embeddings()
        collection = self.bound(name, for_ingest=True)
        return collection.inspect(data, max_pages=self.settings.max_document_pages, password=password or None,
                                  office=self._office)  # fmt: skip

    async def documents(self, name: str) -> list[dict[str, Any]]:
        return await self._run(lambda: self.index().get(name).documents())

    async def document(self, name: str, document_id: str) -> dict[str, Any]:
        """A document's record: `{id, name, pages, bytes, sha256, metadata, created_at, kind, dpi}`."""
        return await self._run(lambda: self.index().get(name).document(document_id))

    async def patch_document(self, name: str, document_id: str, metadata: Any) -> dict[str, Any]:
        """Merge `metadata` into a document's metadata (a JSON merge patch: null deletes a key); its record."""
        try:
            return await self._run(lambda: self.index().get(name).patch_metadata(document_id, metadata))
        finally:
            self._changed(name)

    async def document_file(self, name: str, document_id: str) -> tuple[bytes, str, str]:
        """A document's uploaded bytes, their media type and its file name."""

        def read() -> tuple[bytes, str, str]:
            data, media_type, record = self.index().get(name).file(document_id)
            return data, media_type, record.get("name") or ""

        return await self._run(read)

    async def delete_document(self, name: str, document_id: str) -> None:
        try:
            await self._run(lambda: self.index().get(name).delete(document_id))
        finally:
            self._changed(name)

    async def page_png(self, name: str, document_id: str, page: int, *, full: bool = False) -> bytes:
        """Page `page` (1-based) of a stored document, rendered again and PNG-encoded on the read
        pool (never the event loop). A page over PAGE_IMAGE_MAX_PIXELS (4 Mpx; a letter page at
        150 DPI is 2.1 Mpx) is downscaled to it, aspect kept, unless `full`: a noisy 64 Mpx scan
        took 25 s and 120 MB of PNG to serve whole, 4.5 s and 6 MB downscaled."""
        from pagelens.codecs.images import PAGE_IMAGE_MAX_PIXELS, reduce_image

        def render() -> bytes:
            image = self.index().get(name).page_image(document_id, page)
            if not full:
                image = reduce_image(image, PAGE_IMAGE_MAX_PIXELS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()

        return await self._run(render)

    async def page_image(self, name: str, document_id: str, page: int, *, max_pixels: int) -> Image.Image:
        """Page `page` (1-based) as an RGB image of at most `max_pixels`, for an answer model's prompt."""
        return await self._run(lambda: self.index().get(name).page_image(document_id, page, max_pixels=max_pixels))

    async def page_text(self, name: str, document_id: str, page: int) -> str | None:
        """Page `page`'s (1-based) PDF text layer ("" for none; None for an image document)."""
        return await self._run(lambda: self.index().get(name).page_text(document_id, page))

    # ------------------------------------------------------------------ search
    async def search(
        self,
        name: str,
        query: str,
        *,
        k: int = 10,
        mode: str = "exact",
        prefetch: int | None = None,
        filter: dict[str, Any] | None = None,
        timings: StageTimings | None = None,
        stages: dict[str, float] | None = None,
    ) -> list[SearchHit]:
        """The `k` best pages for a query text (MaxSim, or the dot product for single-vector models).
        A bad `filter` is refused before the query is embedded; a query seen before is not embedded
        again (`query_cache`). `stages` gets the seconds spent embedding (`embed`) and searching.
        A fast search without `prefetch` runs at the collection's adapted default; either way it may
        be sampled for a recall check (the same vectors, k, filter and prefetch, searched exactly in
        the background)."""
        check_filter(filter)
        embeddings = self._embeddings()
        started = time.perf_counter()
        collection = await self._run(self.bound, name, for_ingest=False)
        opened = time.perf_counter()
        vectors = self.query_cache.get(embeddings.info.model, query)
        if vectors is None:
            (vectors,) = await embeddings.embed_queries([query], timings=timings)
            self.query_cache.put(embeddings.info.model, query, vectors)
        embedded = time.perf_counter()
        used = collection.recall.prefetch if prefetch is None else prefetch
        hits = await self._run(collection.search, vectors, k=k, mode=mode, prefetch=used, filter=filter)
        if stages is not None:
            stages["embed"] = embedded - opened
            stages["search"] = (opened - started) + (time.perf_counter() - embedded)
        if mode == "fast" and collection.fast_is_approximate:
            self.recall_sampler.offer(
                lambda cancelled: collection.measure_recall(
                    vectors, hits, k=k, prefetch=used, filter=filter, cancelled=cancelled
                )
            )
        return hits

    # ------------------------------------------------------------------ snapshots
    async def export(self, name: str, target: BinaryIO | Path) -> dict[str, Any]:
        """Write collection `name` as a snapshot archive (index/snapshot.py: a tar of its manifest,
        records, files and stored vectors) to `target`: a path (replaced once the archive is
        complete) or a binary file object, written sequentially. Returns the manifest. No model needed."""
        from pagelens.index.snapshot import export_collection

        return await self._run(lambda: export_collection(self.index().get(name), target), snapshot=True)

    async def export_stream(self, name: str) -> AsyncIterator[bytes]:
        """Collection `name` as snapshot archive bytes, produced while they are consumed (a few MiB
        ahead at most). `NotFound` or `InvalidInput` before any byte; a failure later ends the stream
        with that error, the archive unfinished (its import refuses it). Stop iterating to stop the export."""
        from pagelens.index.snapshot import export_collection
        from pagelens.service.snapshots import start_writer

        collection = await self._run(self.index().get, name)
        loop = asyncio.get_running_loop()
        return start_writer(loop, self._snapshots, lambda pipe: export_collection(collection, pipe))

    async def import_(self, source: Path | BinaryIO | AsyncIterable[bytes], name: str | None = None) -> dict[str, Any]:
        """Create collection `name` (None: the name in the archive) from a snapshot archive: a path,
        a binary file object, or chunks (an HTTP body: spooled to a file under the data directory
        first). Its documents, files, vectors and binding are the archive's; no model is needed.
        Returns its summary, as `info` (`compatible` false when the loaded model cannot use it).
        `Conflict` (409) when the name is taken, `InvalidInput` (400) for a bad name,
        `UnprocessableDocument` (422) naming what is wrong with the archive. All or nothing: on any
        failure, or a crash, no collection is left behind."""
        from pagelens.index.snapshot import import_collection
        from pagelens.service.snapshots import spool

        def restore(path_or_file: Path | BinaryIO) -> dict[str, Any]:
            collection = import_collection(self.index(), path_or_file, name)
            self._changed(collection.name)
            return self._summary(collection)

        if not isinstance(source, AsyncIterable):
            return await self._run(restore, source, snapshot=True)
        scratch = (await self._run(self.index)).scratch()  # removed at exit, or at the next start after a crash
        directory = await self._run(scratch.__enter__)
        try:
            await spool(source, directory / "archive.tar", self._reads)
            return await self._run(restore, directory / "archive.tar", snapshot=True)
        finally:
            await self._run(scratch.__exit__, None, None, None)
