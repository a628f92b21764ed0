"""Embedding fan-out: a large document set split into page batches that many workers (Modal GPU
containers: deploy/modal_fanout.py) embed at once, written straight into a collection on a Qdrant
server with the whole-or-absent protocol of the Qdrant store (index/qdrant_store.py).

    plan = plan_fanout(root, ["a.pdf", "b.png"], batch_pages=16)    # documents, page counts, batches
    store = open_fanout_store(client, "reports", binding)          # made with the model's binding, or checked
    report = run_fanout(plan, store, map_batches, retries=2)       # map_batches: the workers (any `map`)

    # in each worker, for each batch:
    embed_batch(batch, root=root, embed=runtime.embed_images, store=worker_store)

Protocol (the coordinator is the one caller of `run_fanout`; workers only write pages):
1. The collection is opened, or created with the model's binding (`ModelMismatch` when it holds
   another model's vectors, as for `pagelens serve`).
2. Documents already complete with all their pages are skipped (the id is the hash of the file's
   bytes, as for an upload, so re-running a set resumes it). Pages of documents outside this run
   that the fan-out's owner left "ingesting" (a coordinator that died) are purged.
3. A batch (pages first..last of one document) is rendered, embedded and upserted as "ingesting"
   pages owned by FANOUT_OWNER, invisible to searches. Point ids are (document, page) hashes, so
   a retried batch overwrites what its failed attempt wrote: never a duplicate page.
4. Once every batch of a document has succeeded, the coordinator counts its stored pages and, when
   all are there, marks the document complete: once, in one update (stale pages of an older,
   longer version deleted first). A document with a batch still failing after `retries` retries is
   never marked; the pages the fan-out wrote for it are deleted and it is reported as failed.

A serving pagelens purges only its own owner's incomplete pages when it opens a collection, so a
fan-out in flight is safe from the replicas serving that collection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pagelens.codecs.metadata import check_metadata
from pagelens.errors import BackendFailure, Conflict, InvalidInput, ModelMismatch, NotFound, PagelensError
from pagelens.index.binding import METADATA_KEY, ModelBinding
from pagelens.index.collections import BUILD_KEY, NAME_PATTERN
from pagelens.index.pdf import DEFAULT_DPI, file_sha256, load_source, open_document
from pagelens.index.qdrant_store import QdrantPageStore, create_collection, qdrant_errors, qdrant_location

if TYPE_CHECKING:
    from PIL import Image
    from qdrant_client import QdrantClient

    from pagelens.service.runtime import Runtime
    from pagelens.settings import Settings

log = logging.getLogger(__name__)

FANOUT_OWNER = "pagelens-fanout"  # the owner of the pages a fan-out writes (replicas never purge them)
DEFAULT_BATCH_PAGES = 16
MAX_BATCH_PAGES = 256


@dataclass(frozen=True)
class SourceDocument:
    """One file of the set: `path` relative to the root the workers share, `document_id` (the first
    32 hex digits of the bytes' SHA-256, as an upload's), its page count."""

    path: str
    document_id: str
    name: str
    pages: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PageBatch:
    """Pages `first`..`last` (1-based, inclusive) of one document: one worker call."""

    document: SourceDocument
    first: int
    last: int
    dpi: int = DEFAULT_DPI

    @property
    def pages(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class FanoutPlan:
    documents: list[SourceDocument]
    batch_pages: int
    dpi: int = DEFAULT_DPI

    def batches(self, documents: Iterable[SourceDocument] | None = None) -> list[PageBatch]:
        """Each document's pages cut into batches of at most `batch_pages`, documents in order."""
        return [PageBatch(document, first, min(first + self.batch_pages - 1, document.pages), self.dpi)
                for document in (self.documents if documents is None else documents)
                for first in range(1, document.pages + 1, self.batch_pages)]  # fmt: skip


@dataclass
class FanoutReport:
    """What a run did: documents made searchable, skipped (already complete), failed (id -> last
    error); batches run, retried."""

    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pages_written: int = 0
    batches: int = 0
    retried: int = 0
    purged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_fanout(
    root: str | Path,
    paths: Sequence[str],
    *,
    batch_pages: int = DEFAULT_BATCH_PAGES,
    dpi: int = DEFAULT_DPI,
    metadata: dict[str, Any] | None = None,
) -> FanoutPlan:
    """Open each file under `root` once (PDF or image: sniffed, pages counted, nothing rendered) and
    plan its batches. InvalidInput naming a file that is missing or the same bytes as an earlier one,
    or a bad `batch_pages`; the document errors of an upload (415, 422) naming a file that is no
    document (an encrypted PDF too: the fan-out takes no passwords)."""
    if not 1 <= batch_pages <= MAX_BATCH_PAGES:
        raise InvalidInput(f"batch_pages must be between 1 and {MAX_BATCH_PAGES}, got {batch_pages}")
    check_metadata(metadata or {})
    documents: list[SourceDocument] = []
    seen: dict[str, str] = {}
    for relative in paths:
        path = Path(root) / relative
        if not path.is_file():
            raise InvalidInput(f"{relative}: no such file under {root}")
        document_id = file_sha256(path)[:32]
        if document_id in seen:
            raise InvalidInput(f"{relative} has the same bytes as {seen[document_id]}: give each document once")
        seen[document_id] = relative
        try:
            with open_document(load_source(path)) as opened:
                pages = opened.pages
        except PagelensError as error:  # 415 / 422 of an upload, naming the file
            raise type(error)(f"{relative}: {error.message}") from None
        documents.append(SourceDocument(str(relative), document_id, Path(relative).name, pages, dict(metadata or {})))
    return FanoutPlan(documents, batch_pages, dpi)


def open_fanout_store(
    client: QdrantClient,
    collection: str,
    binding: ModelBinding,
    *,
    prefix: str = "pagelens_",
    owner: str = FANOUT_OWNER,
) -> QdrantPageStore:
    """The store of pagelens collection `collection` (`<prefix><collection>` on the server) for pages
    of `binding`'s model: created with the binding when missing; `ModelMismatch` when it holds
    another model's vectors or pooling, NotFound while another server imports it. Opening it purges
    nothing: the coordinator purges (`run_fanout`), never a worker."""
    if not isinstance(collection, str) or not NAME_PATTERN.fullmatch(collection):
        raise InvalidInput(f"collection name {collection!r} must be 1-64 letters, digits, '_', '-' or '.'")
    name, where = prefix + collection, qdrant_location(client)
    with qdrant_errors(where, name):
        exists = client.collection_exists(name)
    if not exists:
        try:
            with qdrant_errors(where, name):  # 409 -> Conflict: another coordinator made it first
                create_collection(client, name, binding.schema)
                client.update_collection(name, metadata={METADATA_KEY: binding.to_dict()})
        except Conflict:
            pass
    with qdrant_errors(where, name):
        metadata = client.get_collection(name).config.metadata or {}
    if BUILD_KEY in metadata:
        raise NotFound(f"collection {collection!r} is being imported (or its import was interrupted)")
    if METADATA_KEY not in metadata:  # a collection from before bindings: adopted, as `pagelens serve` does
        with qdrant_errors(where, name):
            client.update_collection(name, metadata={METADATA_KEY: binding.to_dict()})
        log.warning("collection %r had no model binding; adopted by %s", collection, binding.describe())
    else:
        recorded = ModelBinding.from_dict(metadata[METADATA_KEY])
        problems = recorded.space_differences(binding)
        if recorded.pool_factor != binding.pool_factor:
            problems.append(f"pool_factor {recorded.pool_factor!r} vs {binding.pool_factor!r}")
        if problems:
            raise ModelMismatch(
                f"collection {collection!r} holds pages of {recorded.describe()}, not of {binding.describe()} "
                f"({'; '.join(problems)})"
            )
    return QdrantPageStore(client, name, owner=owner, schema=binding.schema, purge=False)


def embed_batch(
    batch: PageBatch,
    *,
    root: str | Path,
    embed: Callable[[Sequence[Image.Image]], list[np.ndarray]],
    store: QdrantPageStore,
    render_pixels: int | None = None,
) -> int:
    """A worker's call: render the batch's pages from `root / batch.document.path` (PDF pages within
    `render_pixels`, the model's page budget, as an upload's ingest renders them), embed them
    (`embed`: images -> `(n_tokens, 128)` or `(dim,)` float arrays, in order) and upsert them as
    ingesting pages; return how many were written."""
    document = batch.document
    path = Path(root) / document.path
    with open_document(load_source(path)) as opened:
        if opened.pages != document.pages:
            raise Conflict(f"{document.path} has {opened.pages} pages now, not the {document.pages} planned")
        images = next(opened.batches(dpi=batch.dpi, batch_pages=batch.pages, start_page=batch.first - 1,
                                     render_pixels=render_pixels))  # fmt: skip
    vectors = embed(images)
    if len(vectors) != len(images):
        raise BackendFailure(f"the model returned {len(vectors)} embeddings for {len(images)} pages")
    numbered = zip(range(batch.first, batch.last + 1), vectors, strict=True)
    return store.write_pages(document.document_id, numbered, name=document.name, metadata=document.metadata)


MapBatches = Callable[[list[PageBatch]], Iterable[Any]]  # batches -> per batch, in order: pages written or the error


def run_fanout(plan: FanoutPlan, store: QdrantPageStore, map_batches: MapBatches, *, retries: int = 2) -> FanoutReport:
    """The coordinator: skip complete documents, purge this owner's leftovers, map the batches over
    the workers (`map_batches(batches)` yields, in order, each batch's page count or the exception it
    raised), map the failed ones again up to `retries` times, then mark each document whose batches
    all succeeded complete, once. Failed documents' pages are deleted (see the module docstring)."""
    report = FanoutReport()
    todo = []
    for document in plan.documents:
        if store.page_count(document.document_id) == document.pages:
            report.skipped.append(document.document_id)
        else:
            todo.append(document)
    report.purged = store.purge_incomplete(keep=[document.document_id for document in todo])
    pending = plan.batches(todo)
    errors: dict[str, str] = {}
    for attempt in range(retries + 1):
        if not pending:
            break
        report.batches += len(pending)
        report.retried += len(pending) if attempt else 0
        failed = []
        for batch, outcome in zip(pending, map_batches(pending), strict=True):
            if isinstance(outcome, BaseException):
                failed.append(batch)
                errors[batch.document.document_id] = f"pages {batch.first}-{batch.last}: {outcome}"
                log.warning("%s pages %d-%d failed (attempt %d): %s", batch.document.path, batch.first,
                            batch.last, attempt + 1, outcome)  # fmt: skip
            else:
                report.pages_written += int(outcome)
        pending = failed
    failing = {batch.document.document_id for batch in pending}
    for document in todo:
        if document.document_id not in failing:
            stored = store.stored_pages(document.document_id)
            if stored >= document.pages:
                store.mark_complete(document.document_id, document.pages)
                report.completed.append(document.document_id)
                continue
            errors[document.document_id] = f"{stored} of {document.pages} pages stored after every batch succeeded"
        store.discard_incomplete(document.document_id)
        report.failed[document.document_id] = errors[document.document_id]
    return report


def qdrant_client(settings: Settings) -> QdrantClient:
    """A client for `settings.qdrant_url` (and key); InvalidInput when no URL is set."""
    from qdrant_client import QdrantClient

    if not settings.qdrant_url:
        raise InvalidInput(
            "the fan-out writes to a Qdrant server: set PAGELENS_QDRANT_URL (and PAGELENS_QDRANT_API_KEY)"
        )
    return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key or None)


class FanoutWorker:
    """One worker's state: a started runtime (the model, batched pages on its device) and a Qdrant
    client. `binding()` is the model's; `embed(collection, batch)` runs `embed_batch`, from several
    threads at once if need be (the engine batches their pages together). The stores it opens never
    purge (`purge=False`). Close it to stop the engine."""

    def __init__(self, runtime: Runtime, client: QdrantClient, *, root: str | Path, prefix: str = "pagelens_") -> None:
        self.runtime, self.client, self.root, self.prefix = runtime, client, Path(root), prefix
        self._stores: dict[str, QdrantPageStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, root: str | Path) -> FanoutWorker:
        from pagelens.service.runtime import Runtime

        return cls(Runtime(settings).start(), qdrant_client(settings), root=root, prefix=settings.qdrant_prefix)

    def binding(self) -> ModelBinding:
        from pagelens.service.collections import binding_of

        return binding_of(self.runtime.info)

    def embed(self, collection: str, batch: PageBatch) -> int:
        """Embed and write one batch into `collection` (which the coordinator opened for this model)."""
        with self._lock:
            store = self._stores.get(collection)
            if store is None:
                store = self._stores[collection] = QdrantPageStore(self.client, self.prefix + collection,
                                                                   owner=FANOUT_OWNER, purge=False)  # fmt: skip
        return embed_batch(batch, root=self.root, embed=self.runtime.embed_images, store=store,
                           render_pixels=self.runtime.info.page_pixels)  # fmt: skip

    def close(self) -> None:
        self.runtime.close()
        self.client.close()


def fan_out(
    client: QdrantClient,
    collection: str,
    binding: ModelBinding,
    plan: FanoutPlan,
    map_batches: MapBatches,
    *,
    prefix: str = "pagelens_",
    retries: int = 2,
) -> FanoutReport:
    """The coordinator end to end: open (or create) the collection for `binding`, then `run_fanout`."""
    store = open_fanout_store(client, collection, binding, prefix=prefix)
    report = run_fanout(plan, store, map_batches, retries=retries)
    log.info("fan-out into %r: %d documents complete, %d skipped, %d failed, %d pages, %d batches retried",
             collection, len(report.completed), len(report.skipped), len(report.failed), report.pages_written,
             report.retried)  # fmt: skip
    return report
