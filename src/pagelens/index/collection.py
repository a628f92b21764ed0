"""One collection: its page store plus the uploaded files (so a page image can be rendered
again), with one JSON record per document (layout and guarantees: index/collections.py).

    <collection>/files/<id>       the uploaded bytes (an encrypted PDF decrypted, an office document
                                  as the PDF LibreOffice made of it: what its pages render from)
    <collection>/files/<id>.json  {"id", "name", "pages", "metadata", "kind", "dpi", "bytes", "sha256",
                                   "created_at"} (index/records.py)

A document's metadata lives in its record and, copied, in every page's payload (search filters
read it there); `patch_metadata` changes both, and says how they agree again after a crash.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pagelens.codecs.images import reduce_image
from pagelens.codecs.metadata import check_filter, check_metadata, merge_metadata
from pagelens.errors import InvalidInput, NotFound, PayloadTooLarge
from pagelens.index.ahead import run_ahead
from pagelens.index.binding import ModelBinding
from pagelens.index.edge_store import SingleVectorEdgeStore
from pagelens.index.files import KeyedLocks, write_atomically
from pagelens.index.office import OfficeConverter, office_format
from pagelens.index.pages import PageSchema, PageStore, SearchHit
from pagelens.index.pdf import (
    DEFAULT_DPI,
    OpenedDocument,
    RenderCancelled,
    RenderPool,
    default_pool,
    file_sha256,
    load_source,
    open_document,
)
from pagelens.index.qdrant_store import QdrantPageStore
from pagelens.index.recall import DEFAULT_TARGET_RECALL, SEARCH_FILE, AdaptivePrefetch, measure_recall
from pagelens.index.records import PENDING, MetadataKeys, media_type, public, utc_now

log = logging.getLogger(__name__)

DOCUMENT_ID = re.compile(r"[0-9a-f]{32}")  # the first 32 hex digits of the bytes' SHA-256
# per image, its vectors or (vectors, its patch layout or None) (index/patches.py)
EmbedPages = Callable[[Sequence[Image.Image]], list[np.ndarray] | list[tuple[np.ndarray, dict[str, Any] | None]]]
Progress = Callable[[int, int], None]  # (pages stored so far, pages in the document)


def source_size(data: bytes | Path) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def check_page_count(pages: int, max_pages: int | None) -> None:
    if max_pages is not None and pages > max_pages:
        raise PayloadTooLarge(
            f"the document has {pages} pages, over the limit of {max_pages} (PAGELENS_MAX_DOCUMENT_PAGES)"
        )


class Collection:
    """One collection: its page store and, under `directory/files`, the uploaded files and records.

    Every operation runs `in_use()`; `stop()` refuses new ones, makes ingests in flight give up at
    their next page, and waits until none runs (a collection delete).

    `recall` (index/recall.py) holds the fast mode's measured recall and its adapted default
    prefetch (kept at `target_recall`), stored in `directory/search.json`."""

    def __init__(
        self,
        directory: Path,
        store: PageStore,
        binding: ModelBinding | None = None,
        renderer: RenderPool | None = None,
        *,
        target_recall: float = DEFAULT_TARGET_RECALL,
    ) -> None:
        self.name = directory.name
        self.directory = directory
        self.files = directory / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.binding = binding  # the model that fills it (None: a collection from before bindings)
        self._documents = KeyedLocks()
        self._users = 0
        self._state = threading.Condition()
        self.stopping = False
        for temporary in self.files.glob(".*.tmp"):  # a write interrupted before its rename
            temporary.unlink(missing_ok=True)
        self.renderer = renderer or default_pool()  # the PDF render workers (index/render_pool.py)
        for record in self.files.glob("*.json"):  # files of ingests that never completed
            document_id = record.stem
            if self.store.page_count(document_id) == 0:
                record.unlink(missing_ok=True)
                (self.files / document_id).unlink(missing_ok=True)
        self.metadata_keys = MetadataKeys()  # what a search filter's keys are checked against
        self._load_records()
        self.recall = AdaptivePrefetch(directory / SEARCH_FILE, initial=store.default_prefetch, target=target_recall)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold the collection open for one operation; `NotFound` once it is being deleted."""
        with self._state:
            if self.stopping:
                raise NotFound(f"collection {self.name!r} was deleted")
            self._users += 1
        try:
            yield
        finally:
            with self._state:
                self._users -= 1
                self._state.notify_all()

    def stop(self) -> None:
        """Refuse new operations and wait for those running (ingests stop at their next page)."""
        with self._state:
            self.stopping = True
            self._state.wait_for(lambda: self._users == 0)

    @property
    def schema(self) -> PageSchema:
        """What each page's embedding is: `(n_tokens, 128)` multi-vectors or single `(dim,)` vectors."""
        return self.store.schema

    def _record(self, document_id: str) -> dict[str, Any]:
        if not isinstance(document_id, str) or not DOCUMENT_ID.fullmatch(document_id):
            raise NotFound(f"no document {document_id!r} in collection {self.name!r} (ids are 32 hex digits)")
        path = self.files / f"{document_id}.json"
        shared = isinstance(self.store, QdrantPageStore)  # other servers store pages in it too
        if shared and not path.exists() and self.store.page_count(document_id) > 0:
            raise NotFound(
                f"document {document_id!r} of collection {self.name!r} was stored through another pagelens server "
                "sharing this Qdrant (or a fan-out): its pages are searchable here, but its file and record are "
                "that server's; ask it for the document, its pages' images or its deletion"
            )
        if not path.exists() or self.store.page_count(document_id) == 0:
            raise NotFound(f"no document {document_id!r} in collection {self.name!r}")
        return json.loads(path.read_text())

    def _page_record(self, document_id: str, page: int) -> dict[str, Any]:
        record = self._record(document_id)
        if not 1 <= page <= record["pages"]:
            raise NotFound(f"document {document_id!r} has pages 1..{record['pages']}, not {page}")
        return record

    def _write_record(self, record: dict[str, Any]) -> dict[str, Any]:
        write_atomically(self.files / f"{record['id']}.json", json.dumps(record).encode())
        return record

    def _load_records(self) -> None:
        """Index the documents' metadata keys; finish the metadata changes a crash interrupted (a
        record still marked pending has its metadata written to its pages again, then is unmarked)."""
        for path in self.files.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                log.error("collection %r: document record %s is unreadable (%s)", self.name, path, error)
                continue
            if record.pop(PENDING, False):
                self.store.set_metadata(path.stem, record["metadata"])
                self._write_record(record)
                log.warning("collection %r: document %s's metadata change, interrupted, is now complete",
                            self.name, path.stem)  # fmt: skip
            self.metadata_keys.set(path.stem, record.get("metadata") or {})

    def documents(self) -> list[dict[str, Any]]:
        with self.in_use():
            records = []
            for path in sorted(self.files.glob("*.json")):
                if self.store.page_count(path.stem) > 0:
                    try:
                        records.append(public(json.loads(path.read_text())))
                    except (OSError, ValueError) as error:
                        log.error("collection %r: document record %s is unreadable (%s); not listed", self.name,
                                  path, error)  # fmt: skip
            return records

    def add(
        self,
        data: bytes | Path,
        *,
        name: str,
        metadata: dict[str, Any],
        embed: EmbedPages,
        dpi: int = DEFAULT_DPI,
        render_pixels: int | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        max_pages: int | None = None,
        password: str | None = None,
        keep_partial: Callable[[], bool] | None = None,
        office: OfficeConverter | None = None,
    ) -> dict[str, Any]:
        """Store a PDF, image or office document: render, embed (a bounded batch at a time) and index
        its pages. The document is opened once, for its kind, page count and every batch of pages.
        PDF pages render at `dpi`, shrunk to at most `render_pixels` (the model's budget) if given.
        `metadata` is checked first (codecs/metadata.py); nothing is written for bad metadata.

        An encrypted PDF needs its `password` (ignored for any other upload; never stored: the PDF
        is stored decrypted, so its page images need none). An office document is converted to PDF
        by `office` (default `OfficeConverter()`), unless the same bytes are already stored. The
        document id is the hash of the uploaded bytes either way.

        `progress(done, total)` is called with the pages already stored (0, or those of an
        interrupted ingest it resumes) before the first batch and after each batch's pages are
        stored, ending at (total, total) just before the document is marked complete; not at all
        when the document is already stored. An exception it raises aborts the ingest. A document
        over `max_pages` is `PayloadTooLarge` (413) before any page renders. An ingest that fails
        removes what it stored, unless `keep_partial()` says to keep it (a server shutting down
        suspends an ingest job, to resume it from its first page not stored).

        A page that outlasts the render time limit or crashes the renderer is `UnprocessableDocument`
        (422) naming it. Once `cancel` is set (the client left), rendering stops within a fraction of a
        second and `RenderCancelled` aborts the ingest."""
        check_metadata(metadata)
        data = load_source(data)  # a PDF file stays a path: never whole in memory
        document_id = file_sha256(data)[:32]
        with self.in_use():
            if isinstance(data, bytes) and office_format(data) is not None:  # converting again takes seconds
                stored = self._complete_record(document_id)
                if stored is not None:
                    return stored | {"created": False}
            opened = open_document(data, password=password, renderer=self.renderer, cancel=cancel, office=office)
            with opened as document, self._documents.hold(document_id):
                check_page_count(document.pages, max_pages)
                return self._add_opened(
                    document.data,
                    document_id,
                    document,
                    name=name,
                    metadata=metadata,
                    embed=embed,
                    dpi=dpi,
                    render_pixels=render_pixels,
                    progress=progress,
                    cancel=cancel,
                    keep_partial=keep_partial,
                )

    def _complete_record(self, document_id: str) -> dict[str, Any] | None:
        """The record of `document_id` if every one of its pages is stored, else None."""
        try:
            record = self._record(document_id)
        except (NotFound, OSError, ValueError):
            return None
        return record if self.store.page_count(document_id) == record.get("pages") else None

    def inspect(
        self,
        data: bytes | Path,
        *,
        max_pages: int | None = None,
        password: str | None = None,
        office: OfficeConverter | None = None,
    ) -> tuple[str, int | None]:
        """`(kind, pages)` of an upload, opened (sniffed, counted) but not rendered: what `add` would
        refuse at once (415, 422, 413 over `max_pages`) it refuses here. An office document is not
        converted (that takes seconds): only LibreOffice's presence is checked, and its pages are None."""
        with self.in_use():
            data = load_source(data)
            kind = office_format(data) if isinstance(data, bytes) else None
            if kind is not None:
                (office or OfficeConverter()).check_available(kind)
                return kind, None
            with open_document(data, password=password, renderer=self.renderer) as document:
                check_page_count(document.pages, max_pages)
                return document.kind, document.pages

    def _add_opened(
        self,
        data: bytes | Path,
        document_id: str,
        document: OpenedDocument,
        *,
        name: str,
        metadata: dict[str, Any],
        embed: EmbedPages,
        dpi: int,
        render_pixels: int | None,
        progress: Progress | None,
        cancel: threading.Event | None = None,
        keep_partial: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        kind, pages = document.kind, document.pages
        stored = (self.files / f"{document_id}.json").exists()  # not so when another server stored it
        if stored and self.store.page_count(document_id) == pages:
            return self._record(document_id) | {"created": False}
        first_page = self.store.stored_pages(document_id) + 1  # > 1: an interrupted ingest to resume
        record = {"id": document_id, "name": name, "pages": pages, "metadata": metadata, "kind": kind, "dpi": dpi,
                  "bytes": source_size(data), "sha256": file_sha256(data), "created_at": utc_now()}  # fmt: skip
        write_atomically(self.files / document_id, data)
        write_atomically(self.files / f"{document_id}.json", json.dumps(record).encode())

        def embedded_batches():
            """Each batch's page vectors, embedded while the next batch renders."""
            rendered = run_ahead(
                document.batches(dpi=dpi, start_page=first_page - 1, cancel=cancel, render_pixels=render_pixels)
            )
            try:
                for batch in rendered:
                    yield embed(batch)
            finally:
                rendered.close()

        def page_vectors():
            done = first_page - 1
            if progress is not None:
                progress(done, pages)
            for embedded in run_ahead(embedded_batches()):  # a batch is stored while the next embeds
                for vectors in embedded:
                    if self.stopping:
                        raise NotFound(f"collection {self.name!r} was deleted during the upload")
                    if cancel is not None and cancel.is_set():
                        raise RenderCancelled("the ingest was cancelled")
                    yield vectors
                    done += 1  # the store asks for the next page once it has written this one
                if progress is not None:
                    progress(done, pages)

        try:
            self.store.add_document(document_id, page_vectors(), name=name, metadata=metadata, first_page=first_page)
        except BaseException:
            if keep_partial is None or not keep_partial():
                self._remove(document_id)  # nothing half-stored stays behind
            raise
        self.metadata_keys.set(document_id, metadata)
        return record | {"created": True}

    def _remove(self, document_id: str) -> None:
        """Delete a document's pages, then its record and file (the caller holds its lock)."""
        self.store.delete_document(document_id)
        self.metadata_keys.discard(document_id)
        (self.files / f"{document_id}.json").unlink(missing_ok=True)
        (self.files / document_id).unlink(missing_ok=True)

    def delete(self, document_id: str) -> None:
        with self.in_use():
            self._record(document_id)
            with self._documents.hold(document_id):
                self._record(document_id)  # still there once any ingest of it has finished
                self._remove(document_id)

    def document(self, document_id: str) -> dict[str, Any]:
        """A document's record (index/records.py `public`). A record from before `bytes` and `sha256`
        gets them from its file, written back under the document's lock."""
        with self.in_use():
            record = self._record(document_id)
            if record.get("sha256") is None:
                with self._documents.hold(document_id):
                    record = self._record(document_id)
                    if record.get("sha256") is None:
                        stored = self.files / document_id
                        digest = {"bytes": stored.stat().st_size, "sha256": file_sha256(stored)}
                        record = self._write_record(record | digest)
            return public(record)

    def patch_metadata(self, document_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge `changes` into a document's metadata as a JSON merge patch (`null` deletes a key;
        the result is checked before anything is written) and return its record.

        Under the document's lock (no ingest or delete of it meanwhile), three durable steps: the
        record with the new metadata, marked pending; every page's payload (`set_metadata`); the
        record unmarked. A crash between them leaves the mark, and the next open writes the record's
        metadata to the pages again: record and search filters agree, on the new metadata. If the
        store fails, the old metadata goes back to the record, still marked for the next open."""
        with self.in_use():
            self._record(document_id)
            with self._documents.hold(document_id):
                record = self._record(document_id)
                record.pop(PENDING, None)
                metadata = merge_metadata(record.get("metadata") or {}, changes)
                self._write_record(record | {"metadata": metadata, PENDING: True})
                try:
                    self.store.set_metadata(document_id, metadata)
                except BaseException:
                    self._write_record(record | {PENDING: True})
                    raise
                record = self._write_record(record | {"metadata": metadata})
                self.metadata_keys.set(document_id, metadata)
                return public(record)

    def file(self, document_id: str) -> tuple[bytes, str, dict[str, Any]]:
        """A document's uploaded bytes, their media type (application/pdf, image/png, ...) and its record."""
        with self.in_use():
            record = self._record(document_id)
            try:
                data = (self.files / document_id).read_bytes()
            except FileNotFoundError:  # deleted since its record was read
                raise NotFound(f"no document {document_id!r} in collection {self.name!r}") from None
            return data, media_type(record.get("kind"), data), public(record)

    def page_image(self, document_id: str, page: int, *, max_pixels: int | None = None) -> Image.Image:
        """Page `page` (1-based) rendered again at its stored dpi, or, within `max_pixels`, smaller
        (a PDF page is then rendered at that size, not reduced after)."""
        record, document = self._open_page(document_id, page, max_pixels)
        with document:
            image = document.page_image(page, dpi=record.get("dpi", DEFAULT_DPI))
        return image if max_pixels is None else reduce_image(image, max_pixels)

    def page_text(self, document_id: str, page: int) -> str | None:
        """Page `page`'s (1-based) PDF text layer ("" when it has none; None for an image document)."""
        _record, document = self._open_page(document_id, page, None)
        with document:
            return document.page_text(page)

    def _open_page(self, document_id: str, page: int, max_pixels: int | None) -> tuple[dict[str, Any], Any]:
        with self.in_use():
            record = self._page_record(document_id, page)
            # a PDF page renders within the limit; an image's limit refuses larger ones, so it is reduced after
            limit = {"max_pixels": max_pixels} if max_pixels is not None and record.get("kind") == "pdf" else {}
            with self._documents.hold(document_id):  # the file stays until a worker has opened it
                return record, open_document(self.files / document_id, renderer=self.renderer, **limit)

    def stored_page(self, document_id: str, page: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Page `page` (1-based) as stored: `(vectors float16, its patch layout or None)` (index/patches.py).
        `NotFound` for an unknown document or a page it does not have."""
        with self.in_use():
            self._page_record(document_id, page)
            return self.store.read_page(document_id, page)

    def search(
        self, query: np.ndarray, *, k: int, mode: str, filter: dict[str, Any] | None, prefetch: int | None = None
    ) -> list[SearchHit]:
        """Top-k pages for a query of the schema's shape; `filter` (codecs/metadata.py `check_filter`)
        keys must be metadata fields some stored document has (checked in memory: `metadata_keys`).
        `prefetch`: how many candidate pages the fast mode rescores (at least k; None: the default,
        `recall.prefetch`, adapted to the measured recall from the store's `default_prefetch`,
        EDGE_DEFAULT_PREFETCH (100) on Edge, QDRANT_DEFAULT_PREFETCH (200) on a Qdrant server);
        exact mode ignores it."""
        unknown = self.metadata_keys.unknown(condition.key for condition in check_filter(filter))
        if unknown and isinstance(self.store, QdrantPageStore):  # documents other servers stored count too
            unknown = [key for key in unknown if not self.store.has_metadata_field(key)]
        if unknown:
            raise InvalidInput(
                f"unknown filter field(s) {', '.join(map(repr, unknown))}; "
                f"metadata fields in {self.name!r}: {', '.join(self.metadata_keys.names()) or 'none'}"
            )
        prefetch = self.recall.prefetch if prefetch is None else prefetch
        with self.in_use():
            return self.store.search(query, k=k, mode=mode, filter=filter, prefetch=prefetch)  # type: ignore[arg-type]

    @property
    def fast_is_approximate(self) -> bool:
        """Whether the fast mode can miss pages the exact one finds (not for single vectors on Edge)."""
        return not isinstance(self.store, SingleVectorEdgeStore)

    def measure_recall(
        self, query: np.ndarray, fast_hits: Sequence[SearchHit], *, k: int, prefetch: int,
        filter: dict[str, Any] | None, cancelled: Callable[[], bool] = lambda: False,
    ) -> float | None:  # fmt: skip
        """A fast search re-run exactly, its recall@k recorded in `recall` (index/recall.py
        `measure_recall`); a collection delete stops it like `cancelled()`."""
        with self.in_use():
            return measure_recall(self.store, self.recall, query, fast_hits, k=k, prefetch=prefetch, filter=filter,
                                  cancelled=lambda: cancelled() or self.stopping)  # fmt: skip

    def close(self) -> None:
        self.store.close()
