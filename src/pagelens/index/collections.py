"""Collections: a page store per collection plus the uploaded files (so a page image can be
rendered again), with one JSON record per document.

By default every collection lives under `data_dir` in a Qdrant Edge shard:

    <data_dir>/<collection>/store/          its Qdrant Edge shard (index/edge_store.py)
    <data_dir>/<collection>/files/<id>      the uploaded bytes
    <data_dir>/<collection>/files/<id>.json the document's record (index/records.py)

With a Qdrant server (`qdrant=`), collection `c` is the Qdrant collection `<prefix>c` (names come
from the server, so every pagelens sharing that Qdrant sees the same collections and searches the
same pages) and the files stay on this machine under `<data_dir>/_qdrant/<collection>/files/`
(`_qdrant` is no valid collection name, so it never meets an Edge collection). The document list,
page images and document deletes cover the files uploaded through this data directory.

Each collection records the model that fills it (index/binding.py): `<collection>/binding.json`
on Edge, the collection's metadata on a Qdrant server. Collections made before bindings existed
have none until a model adopts them (`bind`).

Each store is a PageStore (index/pages.py) with the PageSchema given when the collection was
created (multi-vector `(n_tokens, 128)` pages by default, or single `(dim,)` vectors); opening a
collection reads the schema back from its store.

A document's id is the hash of its bytes, so uploading the same file again stores nothing new.
The record and file are written before the pages; a document exists once its pages are complete
in the store, and files left by an interrupted ingest are removed when the collection opens.

Concurrency and crashes: one writer per document (ingest, delete and clean-up of an id take that
id's lock, so two uploads of the same bytes store it once and a failing one never removes what
the other stored); files are replaced atomically through uniquely named, fsynced temporary files;
deleting a collection first stops its writers (an ingest in flight ends with `NotFound`) and
renames its directory to a tombstone (`.deleted-<name>-<random>`), so a crash leaves it either
whole or gone; tombstones are removed when the data directory is next opened.

A collection can also be built out of sight and published whole (`building`: a snapshot's
import). On Edge it is built in `.importing-<name>-<random>/` and renamed into place at the end.
A Qdrant server collection cannot be renamed, so it is made under its final name, marked in its
metadata as importing (with a journal `.importing-<name>-<random>.json` beside the files naming
it); the mark goes last. A build that fails is removed at once; one a crash interrupted is
removed when the data directory is next opened (the Qdrant collection only if it still carries
that build's mark). While it is built, this process neither opens nor lists it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pagelens.errors import BackendFailure, Conflict, InvalidInput, NotFound
from pagelens.index.binding import BINDING_FILE, METADATA_KEY, ModelBinding, read_binding_file
from pagelens.index.collection import Collection, EmbedPages, Progress
from pagelens.index.edge_store import open_edge_store
from pagelens.index.files import sync_directory, write_atomically
from pagelens.index.pages import MULTI_VECTOR_128, PageSchema, PageStore
from pagelens.index.pdf import RenderPool
from pagelens.index.qdrant_store import QdrantPageStore, create_collection, qdrant_errors, qdrant_location
from pagelens.index.recall import DEFAULT_TARGET_RECALL
from pagelens.index.render_pool import BACKGROUND_NICENESS

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from pagelens.settings import Settings

__all__ = ["Collection", "Collections", "EmbedPages", "Progress"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "pagelens_"
SERVER_FILES = "_qdrant"
TOMBSTONE_PREFIX = ".deleted-"
BUILD_PREFIX = ".importing-"  # a collection being built (`building`), or what a crash left of one
BUILD_KEY = "pagelens_importing"  # a Qdrant collection's metadata while it is built: the build's token
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # always fullmatch


class Collections:
    """The collections, opened on first use and kept open: Qdrant Edge shards under `data_dir`, or
    collections named `<prefix><name>` on the Qdrant server `qdrant` talks to. PDFs render in
    `renderer` (None: the process's shared pool, `pagelens.index.pdf.default_pool`)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        qdrant: QdrantClient | None = None,
        prefix: str = DEFAULT_PREFIX,
        renderer: RenderPool | None = None,
        resumable: Callable[[str], Iterable[str]] | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.target_recall = target_recall  # the fast mode's prefetch adapts to keep this (index/recall.py)
        self.resumable = resumable or (lambda name: ())  # collection -> documents whose ingest will resume
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.qdrant = qdrant
        self.prefix = prefix
        self._owns_client = False
        self.renderer = renderer or RenderPool(niceness=BACKGROUND_NICENESS)  # started on first use
        self._owns_renderer = renderer is None
        self._open: dict[str, Collection] = {}
        self._building: set[str] = set()  # names being built (`building`): neither opened nor listed
        self._lock = threading.Lock()
        if qdrant is not None:
            self.where = qdrant_location(qdrant)
            self.files_root = self.data_dir / SERVER_FILES
            self.files_root.mkdir(exist_ok=True)
            owner = self.files_root / "owner"  # marks this data directory's ingests on the shared server
            if not owner.exists():
                write_atomically(owner, uuid.uuid4().hex.encode())
            self.owner = owner.read_text().strip()
        else:
            self.files_root = self.data_dir
        for tombstone in self.files_root.glob(f"{TOMBSTONE_PREFIX}*"):  # deletes a crash interrupted
            shutil.rmtree(tombstone, ignore_errors=True)
        for journal in self.files_root.glob(f"{BUILD_PREFIX}*.json"):  # Qdrant builds a crash interrupted
            self._abandon_build(journal)
        for leftover in self.files_root.glob(f"{BUILD_PREFIX}*"):  # their files, and Edge builds
            shutil.rmtree(leftover, ignore_errors=True)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resumable: Callable[[str], Iterable[str]] | None = None
    ) -> Collections:
        """Edge under `settings.data_dir`, or the Qdrant server at `settings.qdrant_url` when set;
        PDFs render in a pool of `settings.pdf_workers` processes, `settings.pdf_page_timeout_seconds` a page.
        `resumable(collection)` names the documents whose interrupted ingests will resume: their
        stored pages are kept when the collection opens."""
        renderer = RenderPool(workers=settings.pdf_workers, page_timeout=settings.pdf_page_timeout_seconds,
                              niceness=BACKGROUND_NICENESS)  # fmt: skip
        if not settings.qdrant_url:
            collections = cls(settings.data_dir, renderer=renderer, resumable=resumable,
                              target_recall=settings.target_recall)  # fmt: skip
        else:
            from qdrant_client import QdrantClient

            client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key or None)
            collections = cls(settings.data_dir, qdrant=client, prefix=settings.qdrant_prefix, renderer=renderer,
                              resumable=resumable, target_recall=settings.target_recall)  # fmt: skip
            collections._owns_client = True
        collections._owns_renderer = True
        return collections

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise InvalidInput(f"collection name {name!r} must be 1-64 letters, digits, '_', '-' or '.'")

    # ------------------------------------------------- where the stores are
    def _exists(self, name: str) -> bool:
        if self.qdrant is None:
            return (self.data_dir / name / "store").exists()
        with qdrant_errors(self.where):
            return self.qdrant.collection_exists(self.prefix + name)

    def _open_collection(self, name: str, schema: PageSchema | None = None) -> Collection:
        """Open collection `name` with its stored schema (created with `schema` when new)."""
        directory = self.files_root / name
        keep = set(self.resumable(name))
        if self.qdrant is None:
            store: PageStore = open_edge_store(directory / "store", schema=schema, keep_incomplete=keep)
        else:
            store = QdrantPageStore(self.qdrant, self.prefix + name, owner=self.owner, schema=schema,
                                    keep_incomplete=keep)  # fmt: skip
        try:
            return Collection(directory, store, self._read_binding(name), renderer=self.renderer,
                              target_recall=self.target_recall)  # fmt: skip
        except BaseException:
            store.close()
            raise

    def _read_binding(self, name: str) -> ModelBinding | None:
        """The model binding `name` records; `BackendFailure` naming the collection when unreadable."""
        try:
            if self.qdrant is None:
                return read_binding_file(self.data_dir / name / BINDING_FILE)
            with qdrant_errors(self.where, name):
                metadata = self.qdrant.get_collection(self.prefix + name).config.metadata or {}
            if BUILD_KEY in metadata:  # another server's import, running or interrupted
                raise NotFound(f"collection {name!r} is being imported (or its import was interrupted)")
            return ModelBinding.from_dict(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
        except ValueError as error:
            raise BackendFailure(
                f"collection {name!r}: its model binding is unreadable ({error}); restore the record, or remove "
                "it to let the next model that opens the collection adopt it"
            ) from None

    def _write_binding(self, name: str, binding: ModelBinding) -> None:
        if self.qdrant is None:
            write_atomically(self.data_dir / name / BINDING_FILE, json.dumps(binding.to_dict()).encode())
            return
        with qdrant_errors(self.where, name):
            self.qdrant.update_collection(self.prefix + name, metadata={METADATA_KEY: binding.to_dict()})

    def _stored_names(self) -> list[str]:
        if self.qdrant is None:
            found = [p.name for p in self.data_dir.iterdir() if (p / "store").exists()]
            return [name for name in found if NAME_PATTERN.fullmatch(name)]
        with qdrant_errors(self.where):
            found = [c.name for c in self.qdrant.get_collections().collections]
        names = [found_name[len(self.prefix) :] for found_name in found if found_name.startswith(self.prefix)]
        return [name for name in names if NAME_PATTERN.fullmatch(name)]

    def _drop(self, name: str) -> None:
        """Remove a closed collection: the server's collection first (if any), then the local
        directory, renamed to a tombstone at once (atomic) and removed after."""
        if self.qdrant is not None:
            with qdrant_errors(self.where):
                self.qdrant.delete_collection(self.prefix + name)
        directory = self.files_root / name
        tombstone = directory.with_name(f"{TOMBSTONE_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(directory, tombstone)
        except FileNotFoundError:
            return
        shutil.rmtree(tombstone, ignore_errors=True)

    # ------------------------------------------------- building a collection out of sight
    @contextmanager
    def building(self, name: str, binding: ModelBinding | None, schema: PageSchema) -> Iterator[Collection]:
        """A new, empty collection `name` of `schema` pages (and `binding`, when not None: it must be
        for `schema`) to fill in the block; published whole when the block ends, removed when it
        raises (or the process dies: see the module docstring). `Conflict` when `name` is taken, now
        or when the block ends. Fill it through its store and files only: it is not open for searches."""
        self._check_name(name)
        token = uuid.uuid4().hex[:12]
        directory = self.files_root / f"{BUILD_PREFIX}{name}-{token}"
        journal = directory.with_name(directory.name + ".json")
        with self._lock:
            if name in self._building or self._exists(name):
                raise Conflict(f"collection {name!r} already exists")
            self._building.add(name)
        store: PageStore | None = None
        made_on_server = published = False
        try:
            directory.mkdir(parents=True)
            if self.qdrant is None:
                if binding is not None:
                    write_atomically(directory / BINDING_FILE, json.dumps(binding.to_dict()).encode())
                store = open_edge_store(directory / "store", schema=schema)
            else:
                write_atomically(journal, json.dumps({"name": name, "token": token}).encode())
                made_on_server = True  # whatever of it exists is this build's, unless the name was taken
                try:
                    with qdrant_errors(self.where, self.prefix + name):  # 409 -> Conflict: another server took it
                        create_collection(self.qdrant, self.prefix + name, schema)
                except Conflict:
                    made_on_server = False
                    raise
                marks = {BUILD_KEY: token} | ({METADATA_KEY: binding.to_dict()} if binding is not None else {})
                with qdrant_errors(self.where, name):
                    self.qdrant.update_collection(self.prefix + name, metadata=marks)
                store = QdrantPageStore(self.qdrant, self.prefix + name, owner=self.owner, schema=schema)
            collection = Collection(directory, store, binding, renderer=self.renderer, target_recall=self.target_recall)
            yield collection
            collection.close()
            store = None
            with self._lock:
                self._publish(name, directory, journal)
                published = True
                self._building.discard(name)
                self._open[name] = self._open_collection(name)
        finally:
            if not published:
                self._discard_build(name, directory, journal, store, made_on_server)
            with self._lock:
                self._building.discard(name)

    def _discard_build(
        self, name: str, directory: Path, journal: Path, store: PageStore | None, made_on_server: bool
    ) -> None:
        """Remove a build that failed; what cannot be removed now is logged and left to the next start."""
        try:
            if store is not None:
                store.close()
            if made_on_server:
                with qdrant_errors(self.where):
                    self.qdrant.delete_collection(self.prefix + name)  # type: ignore[union-attr]
        except Exception as error:  # the build's own error is the one to raise
            log.error("collection %r: cannot remove the failed import (%s); the next start will", name, error)
            return
        shutil.rmtree(directory, ignore_errors=True)
        journal.unlink(missing_ok=True)

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A new, empty directory beside the collections (an import's spooled upload), removed when
        the block ends, or at the next open after a crash."""
        directory = self.files_root / f"{BUILD_PREFIX}scratch-{uuid.uuid4().hex[:12]}"
        directory.mkdir()
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _publish(self, name: str, directory: Path, journal: Path) -> None:
        """Move a finished build into place (the caller holds the lock): rename its directory, then,
        on a Qdrant server, lift the collection's build mark and drop the journal."""
        target = self.files_root / name
        if self.qdrant is None and self._exists(name):  # made by another process meanwhile
            raise Conflict(f"collection {name!r} already exists")
        shutil.rmtree(target, ignore_errors=True)  # a directory without a store: what an interrupted create left
        os.replace(directory, target)
        sync_directory(self.files_root)
        if self.qdrant is not None:
            try:
                with qdrant_errors(self.where, name):
                    self.qdrant.update_collection(self.prefix + name, metadata={BUILD_KEY: None})
            except BaseException:
                os.replace(target, directory)  # still a build, to be removed
                raise
            journal.unlink(missing_ok=True)

    def _abandon_build(self, journal: Path) -> None:
        """Remove what a Qdrant build a crash interrupted made: its collection if it still carries the
        build's mark (else it was published), with the files it may have moved into place."""
        try:
            entry = json.loads(journal.read_text())
            name, token = entry["name"], entry["token"]
            if self.qdrant is not None and NAME_PATTERN.fullmatch(name):
                with qdrant_errors(self.where):
                    if self.qdrant.collection_exists(self.prefix + name):
                        metadata = self.qdrant.get_collection(self.prefix + name).config.metadata or {}
                        if metadata.get(BUILD_KEY) == token:
                            self.qdrant.delete_collection(self.prefix + name)
                            shutil.rmtree(self.files_root / name, ignore_errors=True)
                            log.warning("removed collection %r, whose import was interrupted", name)
        except (OSError, ValueError, KeyError, TypeError, BackendFailure) as error:
            log.error("cannot clean up the interrupted import %s (%s); it is kept for the next start", journal, error)
            return
        journal.unlink(missing_ok=True)

    # ------------------------------------------------- the collections
    def create(self, name: str, binding: ModelBinding | None = None) -> Collection:
        """A new, empty collection for `binding`'s model, its pages of that model's PageSchema
        (None: multi-vector 128 and no binding, adopted by the first model to `bind` it).
        `Conflict` when `name` is taken."""
        self._check_name(name)
        with self._lock:
            if name in self._building or self._exists(name):
                raise Conflict(f"collection {name!r} already exists")
            if self.qdrant is None:
                # a directory without a store is what a create interrupted before its store left
                shutil.rmtree(self.data_dir / name, ignore_errors=True)
                if binding is not None:
                    (self.data_dir / name).mkdir(parents=True)
                    self._write_binding(name, binding)  # before the store: a store never lacks its binding
            collection = self._open_collection(name, binding.schema if binding is not None else MULTI_VECTOR_128)
            if self.qdrant is not None and binding is not None:
                self._write_binding(name, binding)
                collection.binding = binding
            self._open[name] = collection
            return collection

    def bind(self, name: str, binding: ModelBinding) -> None:
        """Record `binding` for collection `name` (a collection from before bindings, adopted)."""
        collection = self.get(name)
        with self._lock:
            self._write_binding(name, binding)
            collection.binding = binding

    def get(self, name: str) -> Collection:
        self._check_name(name)
        with self._lock:
            if name not in self._open:
                if name in self._building or not self._exists(name):
                    raise NotFound(f"no collection {name!r}")
                self._open[name] = self._open_collection(name)
            return self._open[name]

    def opened(self) -> list[Collection]:
        """The collections open now (each opened on first use), by name."""
        with self._lock:
            return [self._open[name] for name in sorted(self._open)]

    def names(self) -> list[str]:
        return sorted(set(self._stored_names()) - self._building)

    def delete(self, name: str) -> None:
        """Delete collection `name`: its running operations end first (an ingest gives up at its
        next page with `NotFound`), then its store and files go."""
        collection = self.get(name)
        collection.stop()
        with self._lock:
            if self._open.get(name) is not collection:  # another delete got there first
                raise NotFound(f"no collection {name!r}")
            del self._open[name]
            collection.close()
            self._drop(name)

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
            if self._owns_client and self.qdrant is not None:
                self.qdrant.close()
            if self._owns_renderer and self.renderer is not None:
                self.renderer.close()
