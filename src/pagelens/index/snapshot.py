"""Collection snapshots: a whole collection as one portable tar archive, and back.

    pagelens-collection.json          the manifest, always the first member:
        {"format": "pagelens-collection", "version": 1, "pagelens": "0.1.0", "collection": "reports",
         "binding": {...} | null, "schema": {"dim": 128, "multi_vector": true},
         "documents": 2, "pages": 7, "exported_at": "2026-05-09T07:35:25Z"}
    documents/<id>/record.json        then per document, in id order: its record (index/records.py),
    documents/<id>/file               its stored file (what its page images render from),
    documents/<id>/patches.json       its pages' patch layouts (index/patches.py), a list in page
                                      order of a layout or null (version 2 on; version 1 has none),
    documents/<id>/pages/00001.npy    and each page's vectors in page order: a .npy array,
                                      `(n_tokens, 128)` or `(dim,)` little-endian float16, as stored

Both sides stream: export writes a member at a time (a page's vectors; a file read through from
disk) and import reads them in order, holding at most one page. A page's payload (document_id,
page, name, metadata) is the same for every page of a document but the page number, so it is kept
once: the id and page number in the member's name, the name and metadata in the record.

Import checks each member against the manifest and the record before it: names must be exactly
those expected (compared, never used as paths), members regular files, a file's size and SHA-256
those of its record, vectors finite and of the schema's shape, counts as the manifest says. Anything
else is `UnprocessableDocument` naming the member. Each document is stored through the store's
`add_document`, as an upload is (so centroids and the Edge mirror are rebuilt), inside
`Collections.building`: the collection appears whole when the last member checks out, or not at all.
The cluster centroids (the fast mode's prefetch) are computed again from the float16 vectors, so
fast-mode shortlists may differ in rare ties; exact scores are those of the same stored values.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from pagelens import __version__
from pagelens.codecs.metadata import check_metadata
from pagelens.errors import BackendFailure, Conflict, InvalidInput, NotFound, UnprocessableDocument
from pagelens.index.binding import ModelBinding
from pagelens.index.collection import DOCUMENT_ID, Collection
from pagelens.index.files import write_atomically
from pagelens.index.pages import MULTI_VECTOR_128, PageSchema
from pagelens.index.patches import check_layout
from pagelens.index.records import PENDING, utc_now

if TYPE_CHECKING:
    from pagelens.index.collections import Collections

FORMAT, VERSION = "pagelens-collection", 2  # 2: patches.json per document (similarity maps)
READABLE_VERSIONS = (1, 2)
MANIFEST = "pagelens-collection.json"
MEDIA_TYPE = "application/x-tar"
MAX_JSON_BYTES = 1 << 20  # a manifest or a record
MAX_PAGE_ROWS = 1 << 16  # vectors of one page (ColPali has 1030); 16 MiB of float16 rows of 128
FLOAT16 = np.dtype("<f2")
COPY_CHUNK = 1 << 20
RECORD_MEMBER = re.compile(r"documents/([0-9a-f]{32})/record\.json")


def page_member(document_id: str, page: int) -> str:
    return f"documents/{document_id}/pages/{page:05d}.npy"


def patches_member(document_id: str) -> str:
    return f"documents/{document_id}/patches.json"


# ---------------------------------------------------------------------------- export
def export_collection(collection: Collection, target: BinaryIO | Path) -> dict[str, Any]:
    """Write `collection` as an archive to `target`: a binary file object, written sequentially (a
    pipe or a socket will do), or a path, replaced when the archive is complete. Returns the
    manifest. Each document is read under its lock (no ingest, change or delete of it meanwhile);
    one deleted after the export began is a `Conflict`, and the archive is left unfinished (so is it
    when the collection is deleted meanwhile: `NotFound` at the next page)."""
    with collection.in_use():
        documents = collection.documents()
        manifest = {
            "format": FORMAT, "version": VERSION, "pagelens": __version__, "collection": collection.name,
            "binding": collection.binding.to_dict() if collection.binding is not None else None,
            "schema": {"dim": collection.schema.dim, "multi_vector": collection.schema.multi_vector},
            "documents": len(documents), "pages": sum(record["pages"] for record in documents),
            "exported_at": utc_now(),
        }  # fmt: skip
        with _writable(target) as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            mtime = int(time.time())
            _add(archive, MANIFEST, json.dumps(manifest, indent=1).encode(), mtime)
            for listed in documents:
                _export_document(collection, archive, listed["id"], mtime)
    return manifest


@contextmanager
def _writable(target: BinaryIO | Path) -> Iterator[BinaryIO]:
    if not isinstance(target, str | Path):
        yield target
        return
    path = Path(target)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _add(archive: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    archive.addfile(info, io.BytesIO(data))


def _export_document(collection: Collection, archive: tarfile.TarFile, document_id: str, mtime: int) -> None:
    with collection._documents.hold(document_id):  # the collection's own per-document lock
        record = collection._complete_record(document_id)
        if record is None:
            raise Conflict(f"document {document_id!r} was deleted while the collection was exported; export again")
        path = collection.files / document_id
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
            size = file.tell()
            if record.get("sha256", digest) != digest or record.get("bytes", size) != size:
                raise BackendFailure(f"document {document_id!r}: its stored file {path} does not match its record")
            record = {key: value for key, value in record.items() if key != PENDING} | {"bytes": size, "sha256": digest}
            _add(archive, f"documents/{document_id}/record.json", json.dumps(record).encode(), mtime)
            file.seek(0)
            info = tarfile.TarInfo(f"documents/{document_id}/file")
            info.size, info.mtime, info.mode = size, mtime, 0o644
            archive.addfile(info, file)
        layouts = collection.store.page_layouts(document_id)
        listed = [layouts.get(number) for number in range(1, record["pages"] + 1)]
        _add(archive, patches_member(document_id), json.dumps(listed).encode(), mtime)
        written = 0
        for number, vectors in collection.store.iter_pages(document_id):
            if collection.stopping:  # a delete of the collection waits for this export: end it
                raise NotFound(f"collection {collection.name!r} was deleted during the export")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(vectors, dtype=FLOAT16), (1, 0), allow_pickle=False)
            _add(archive, page_member(document_id, number), buffer.getvalue(), mtime)
            written += 1
        if written != record["pages"]:
            raise BackendFailure(f"document {document_id!r} has {record['pages']} pages, {written} read back")


# ---------------------------------------------------------------------------- import
def import_collection(collections: Collections, source: BinaryIO | Path, name: str | None = None) -> Collection:
    """Create collection `name` (None: the archive's own name) from the archive at `source` (a path,
    or a binary file object read sequentially), with the archive's binding and schema, and return
    it. `Conflict` when the name is taken, `InvalidInput` for a bad name, `UnprocessableDocument`
    naming what is wrong with the archive; on any failure no collection is left behind."""
    with _readable(source) as stream, closing(_Reader(stream)) as reader:
        manifest = reader.manifest()
        name = manifest["collection"] if name is None else name
        schema = manifest["schema"]
        with collections.building(name, manifest["binding"], schema) as building:
            seen: set[str] = set()
            pages = sum(reader.document(building, schema, seen) for _ in range(manifest["documents"]))
            reader.end()
            if pages != manifest["pages"]:
                raise _bad(f"the manifest says {manifest['pages']} pages; the documents hold {pages}")
    return collections.get(name)


@contextmanager
def _readable(source: BinaryIO | Path) -> Iterator[BinaryIO]:
    if isinstance(source, str | Path):
        with open(source, "rb") as file:
            yield file
    else:
        yield source


def _bad(problem: str) -> UnprocessableDocument:
    return UnprocessableDocument(f"not a valid pagelens collection archive: {problem}")


def _json_object(member: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as error:
        raise _bad(f"{member} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise _bad(f"{member} is not a JSON object")
    return value


def _count(value: object, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class _Reader:
    """The archive's members, read in order and checked against what must come next."""

    def __init__(self, stream: BinaryIO) -> None:
        try:
            self.archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115  (closed by `close`)
        except tarfile.TarError as error:
            raise _bad(f"it is not a tar archive ({error})") from None

    def close(self) -> None:
        self.archive.close()  # not the stream under it

    def _next(self, expected: str) -> tarfile.TarInfo | None:
        try:
            return self.archive.next()
        except tarfile.TarError as error:
            raise _bad(f"it is truncated or damaged where {expected} should be ({error})") from None

    def member(self, expected: str | re.Pattern[str], limit: int) -> tuple[tarfile.TarInfo, re.Match[str] | None]:
        """The next member, which must be named `expected` (a name or a pattern) and hold at most `limit` bytes."""
        what = expected if isinstance(expected, str) else "a document's record.json"
        member = self._next(what)
        if member is None:
            raise _bad(f"it ends where {what} should be (truncated?)")
        match = expected.fullmatch(member.name) if isinstance(expected, re.Pattern) else None
        if (member.name != expected) if isinstance(expected, str) else match is None:
            raise _bad(f"found member {member.name!r} where {what} should be")
        if not member.isreg():
            raise _bad(f"member {member.name!r} is not a regular file")
        if member.size > limit:
            raise _bad(f"member {member.name!r} holds {member.size:,} bytes, over the {limit:,} it may")
        return member, match

    def data(self, member: tarfile.TarInfo) -> io.BufferedReader:
        return self.archive.extractfile(member)  # type: ignore[return-value]  # a regular file: never None

    def read(self, member: tarfile.TarInfo) -> bytes:
        try:
            data = self.data(member).read()
        except tarfile.TarError as error:
            raise _bad(f"member {member.name!r} is truncated ({error})") from None
        if len(data) != member.size:
            raise _bad(f"member {member.name!r} is truncated")
        return data

    def manifest(self) -> dict[str, Any]:
        """The manifest, checked: `binding` a ModelBinding or None, `schema` a PageSchema."""
        member, _ = self.member(MANIFEST, MAX_JSON_BYTES)
        manifest = _json_object(MANIFEST, self.read(member))
        if manifest.get("format") != FORMAT:
            raise _bad(f"{MANIFEST} names format {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("version") not in READABLE_VERSIONS:
            raise UnprocessableDocument(
                f"the archive is in format version {manifest.get('version')!r} (written by pagelens "
                f"{manifest.get('pagelens')!r}); this pagelens {__version__} reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        self.version = manifest["version"]
        for field in ("documents", "pages"):
            if not _count(manifest.get(field)):
                raise _bad(f"{MANIFEST}: {field!r} must be a count, got {manifest.get(field)!r}")
        if not isinstance(manifest.get("collection"), str):
            raise _bad(f"{MANIFEST}: 'collection' must be a name")
        try:
            stored = manifest.get("schema") or {}
            schema = PageSchema(stored["dim"], multi_vector=stored["multi_vector"])
            binding = None if manifest.get("binding") is None else ModelBinding.from_dict(manifest["binding"])
        except (KeyError, TypeError, ValueError, InvalidInput) as error:
            raise _bad(f"{MANIFEST}: bad schema or binding ({error})") from None
        if (binding.schema if binding is not None else MULTI_VECTOR_128) != schema:
            bound = binding.describe() if binding is not None else "no binding (multi-vector pages of 128)"
            raise _bad(f"{MANIFEST}: schema {schema} does not match {bound}")
        return manifest | {"binding": binding, "schema": schema}

    def document(self, collection: Collection, schema: PageSchema, seen: set[str]) -> int:
        """Store the next document (record, file, pages) in `collection`; return its page count."""
        member, match = self.member(RECORD_MEMBER, MAX_JSON_BYTES)
        document_id = match.group(1)  # type: ignore[union-attr]
        record = _json_object(member.name, self.read(member))
        _check_record(member.name, record, document_id, seen)
        seen.add(document_id)
        member, _ = self.member(f"documents/{document_id}/file", record["bytes"])
        if member.size != record["bytes"]:
            raise _bad(f"member {member.name!r} holds {member.size:,} bytes; its record says {record['bytes']:,}")
        self._copy(member, collection.files / document_id, record["sha256"])
        write_atomically(collection.files / f"{document_id}.json", json.dumps(record).encode())
        layouts = self._layouts(document_id, record["pages"]) if self.version >= 2 else [None] * record["pages"]
        pages = self._pages(document_id, record["pages"], schema, layouts)
        return collection.store.add_document(document_id, pages, name=record["name"], metadata=record["metadata"])

    def _copy(self, member: tarfile.TarInfo, path: Path, sha256: str) -> None:
        digest = hashlib.sha256()
        try:
            with self.data(member) as source, open(path, "xb") as target:
                while chunk := source.read(COPY_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
        except tarfile.TarError as error:
            raise _bad(f"member {member.name!r} is truncated ({error})") from None
        if digest.hexdigest() != sha256:
            raise _bad(f"member {member.name!r} does not have the SHA-256 its record says")

    def _layouts(self, document_id: str, count: int) -> list[Any]:
        """The document's patch layouts: a JSON list of `count` layouts or nulls (checked against
        each page's rows as it is read)."""
        member, _ = self.member(patches_member(document_id), MAX_JSON_BYTES)
        try:
            layouts = json.loads(self.read(member))
        except ValueError as error:
            raise _bad(f"{member.name} is not JSON ({error})") from None
        if not isinstance(layouts, list) or len(layouts) != count:
            raise _bad(f"{member.name} must list {count} patch layouts (or nulls), one per page")
        return layouts

    def _pages(
        self, document_id: str, count: int, schema: PageSchema, layouts: list[Any]
    ) -> Iterator[tuple[np.ndarray, dict[str, Any] | None]]:
        header = 4096  # an .npy header is 128 bytes
        limit = header + 2 * schema.dim * (MAX_PAGE_ROWS if schema.multi_vector else 1)
        for number, layout in zip(range(1, count + 1), layouts, strict=True):
            member, _ = self.member(page_member(document_id, number), limit)
            vectors = _page_vectors(member.name, self.read(member), schema)
            if layout is not None:
                try:
                    layout = check_layout(layout, len(vectors) if schema.multi_vector else 0)
                except InvalidInput as error:
                    raise _bad(f"{patches_member(document_id)}, page {number}: {error}") from None
            yield vectors, layout

    def end(self) -> None:
        member = self._next("the end of the archive")
        if member is not None:
            raise _bad(f"member {member.name!r} follows the last document the manifest counts")


def _check_record(member: str, record: dict[str, Any], document_id: str, seen: set[str]) -> None:
    problems = []
    if record.get("id") != document_id or not DOCUMENT_ID.fullmatch(document_id):
        problems.append(f"id {record.get('id')!r} is not {document_id!r}")
    if document_id in seen:
        problems.append("the document comes twice")
    if not _count(record.get("pages"), 1):
        problems.append("pages must be a count of at least 1")
    if not _count(record.get("bytes")):
        problems.append("bytes must be a count")
    if not (isinstance(record.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", record["sha256"])):
        problems.append("sha256 must be 64 hex digits")
    if not isinstance(record.get("name"), str):
        problems.append("name must be a string")
    if record.get("dpi") is not None and not _count(record["dpi"], 1):
        problems.append("dpi must be a positive count")
    if PENDING in record:
        problems.append(f"it carries the internal {PENDING!r} mark")
    try:
        check_metadata(record.get("metadata"))
    except InvalidInput as error:
        problems.append(f"metadata: {error}")
    if problems:
        raise _bad(f"{member}: {'; '.join(problems)}")


def _page_vectors(member: str, data: bytes, schema: PageSchema) -> np.ndarray:
    """A page's `.npy` member as a float16 array of the schema's shape."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except ValueError as error:
        raise _bad(f"{member} is not an .npy array ({error})") from None
    if dtype != FLOAT16 or fortran_order:
        order = " in Fortran order" if fortran_order else ""
        raise _bad(f"{member} holds {dtype} values{order}; pages are little-endian float16 in C order")
    if schema.multi_vector:
        fits = len(shape) == 2 and 1 <= shape[0] <= MAX_PAGE_ROWS and shape[1] == schema.dim
    else:
        fits = tuple(shape) == (schema.dim,)
    if not fits:
        raise _bad(f"{member} has shape {tuple(shape)}; the collection's pages are {schema}")
    body = data[stream.tell() :]
    if len(body) != int(np.prod(shape)) * FLOAT16.itemsize:
        raise _bad(f"{member} holds {len(body):,} bytes of vectors for shape {tuple(shape)}")
    vectors = np.frombuffer(body, dtype=FLOAT16).reshape(shape)
    if not np.isfinite(vectors).all():
        raise _bad(f"{member} holds values that are not finite")
    return vectors
