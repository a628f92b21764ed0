"""Collection snapshots (index/snapshot.py): stores read their pages back; a collection exported and
imported under another name, into the same backend or the other one (Qdrant Edge <-> qdrant-client's
local mode) and back, searches, lists, serves files and page images as the original; an import
that fails half-way, or a crash, leaves no collection; bad archives are refused naming what is wrong,
with nothing written."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from pagelens.errors import Conflict, InvalidInput, NotFound
from pagelens.index.binding import ModelBinding
from pagelens.index.collections import Collections
from pagelens.index.snapshot import FORMAT, MANIFEST, VERSION, export_collection, import_collection
from pagelens.testing.fake import FakeBackend
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf

MULTI = FakeBackend(dim=128)
SINGLE = FakeBackend(dim=48, multi_vector=False, name="fake/bi")
FAKES = {"multi": MULTI, "single": SINGLE}
QUERIES = ("total revenue", "a table of figures by region", "signature page", "q")
BACKENDS = ("edge", "qdrant-local")


def binding_of(fake: FakeBackend) -> ModelBinding:
    return ModelBinding(fake.info.model, None, "fake", fake.multi_vector, fake.dim)


def embedder(fake: FakeBackend):
    return lambda images: [fake.expected(fake.prepare_image(image)) for image in images]


def open_collections(backend: str, root: Path) -> Collections:
    """Collections under `root`/data: Qdrant Edge, or a local-mode Qdrant in `root`/qdrant."""
    if backend == "edge":
        return Collections(root / "data")
    return Collections(root / "data", qdrant=QdrantClient(path=str(root / "qdrant")))


def close_collections(collections: Collections) -> None:
    collections.close()
    if collections.qdrant is not None:
        collections.qdrant.close()


def fill(collections: Collections, name: str, fake: FakeBackend):
    """Collection `name`: a 4-page PDF and three images, with metadata (one document's changed)."""
    collection = collections.create(name, binding_of(fake))
    embed = embedder(fake)
    pdf = collection.add(make_pdf(4), name="report.pdf", metadata={"year": 2023, "team": "a"}, embed=embed, dpi=36)
    for seed in (1, 2, 3):
        image = encode(make_page(160 + 20 * seed, 200, seed))
        collection.add(image, name=f"scan{seed}.png", metadata={"year": 2020 + seed}, embed=embed, dpi=36)
    collection.patch_metadata(pdf["id"], {"reviewed": True})
    return collection


def hits(collection, fake: FakeBackend, query: str, **options):
    vectors = fake.expected(fake.prepare_query(query))
    return collection.search(vectors, k=options.pop("k", 10), filter=options.pop("filter", None), **options)


def assert_same_collection(copy, original, fake: FakeBackend) -> None:
    """Search results (ids, pages, names, metadata; scores to float16 precision), documents, records,
    files, page images and binding of `copy` are those of `original`."""
    assert copy.binding == original.binding and copy.schema == original.schema
    for query in QUERIES:
        for options in ({"mode": "exact"}, {"mode": "fast"}, {"mode": "exact", "filter": {"year": {"$gte": 2022}}}):
            got, expected = hits(copy, fake, query, **options), hits(original, fake, query, **options)
            assert [(h.document_id, h.page, h.name, h.metadata) for h in got] == [
                (h.document_id, h.page, h.name, h.metadata) for h in expected
            ], (query, options)
            np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], rtol=1e-3, atol=1e-3)
    documents = original.documents()
    assert copy.documents() == documents and len(documents) == 4
    for document in documents:
        assert copy.document(document["id"]) == original.document(document["id"])
        assert copy.file(document["id"]) == original.file(document["id"])
        for page in range(1, document["pages"] + 1):
            assert (
                copy.page_image(document["id"], page).tobytes() == original.page_image(document["id"], page).tobytes()
            )
    assert copy.store.page_count() == original.store.page_count() == 7


def tree(root: Path) -> set[str]:
    """Every path under `root`, but Qdrant Edge's write-ahead-log segments named as one whether its
    background thread has finished preallocating them (`tmp-open-N` becomes `open-N` on its own)."""
    return {re.sub(r"/wal/tmp-open-", "/wal/open-", str(path.relative_to(root))) for path in root.rglob("*")}


# ---------------------------------------------------------------------------- stores read pages back
@pytest.mark.parametrize("kind", ["multi", "single"])
def test_a_store_reads_a_documents_pages_back_as_stored(backend, tmp_path, kind):
    from tests.index.backends import close_store, open_store

    fake = FAKES[kind]
    store = open_store(backend, tmp_path / "c", "pagelens_test_read", schema=binding_of(fake).schema)
    try:
        rng = np.random.default_rng(3)
        shapes = [(int(rng.integers(1, 300)), 128) for _ in range(11)] if kind == "multi" else [(48,)] * 11
        pages = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        store.add_document("doc", iter(pages), name="d.pdf")
        read = list(store.iter_pages("doc"))
        assert [number for number, _ in read] == list(range(1, 12))
        for (_, vectors), page in zip(read, pages, strict=True):
            assert vectors.dtype == np.float16 and vectors.shape == page.shape
            np.testing.assert_array_equal(vectors, page.astype(np.float16))
        assert list(store.iter_pages("absent")) == []
    finally:
        close_store(store, drop=backend == "qdrant-server")


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["multi", "single"])
@pytest.mark.parametrize("source_backend", BACKENDS)
def test_a_collection_round_trips_through_an_archive_on_either_backend_and_back(tmp_path, source_backend, kind):
    fake = FAKES[kind]
    other_backend = next(backend for backend in BACKENDS if backend != source_backend)
    source = open_collections(source_backend, tmp_path / "source")
    other = open_collections(other_backend, tmp_path / "other")
    try:
        original = fill(source, "reports", fake)
        manifest = export_collection(original, tmp_path / "reports.tar")
        assert manifest["format"] == FORMAT and manifest["version"] == VERSION
        assert (manifest["collection"], manifest["documents"], manifest["pages"]) == ("reports", 4, 7)
        assert manifest["binding"] == binding_of(fake).to_dict()
        assert manifest["schema"] == {"dim": fake.dim, "multi_vector": fake.multi_vector}

        copy = import_collection(source, tmp_path / "reports.tar", "copy")  # the same backend, renamed
        assert sorted(source.names()) == ["copy", "reports"]
        assert_same_collection(copy, original, fake)

        moved = import_collection(other, tmp_path / "reports.tar")  # the other backend, the archive's name
        assert moved.name == "reports" and other.names() == ["reports"]
        assert_same_collection(moved, original, fake)

        class Sequential(io.RawIOBase):  # a pipe: written in order, never sought
            def __init__(self) -> None:
                self.parts: list[bytes] = []

            def writable(self) -> bool:
                return True

            def write(self, data) -> int:
                self.parts.append(bytes(data))
                return len(data)

        pipe = Sequential()
        export_collection(moved, pipe)
        back = import_collection(source, io.BytesIO(b"".join(pipe.parts)), "back")
        assert_same_collection(back, original, fake)
    finally:
        close_collections(other)
        close_collections(source)
    reopened = open_collections(source_backend, tmp_path / "source")  # the imports are durable
    try:
        assert sorted(reopened.names()) == ["back", "copy", "reports"]
        assert_same_collection(reopened.get("back"), reopened.get("reports"), fake)
    finally:
        close_collections(reopened)


def test_an_empty_collection_round_trips(tmp_path):
    collections = open_collections("edge", tmp_path)
    try:
        export_collection(collections.create("empty", binding_of(MULTI)), tmp_path / "empty.tar")
        copy = import_collection(collections, tmp_path / "empty.tar", "copy")
        assert copy.documents() == [] and copy.binding == binding_of(MULTI)
    finally:
        close_collections(collections)


def test_an_export_ends_unfinished_when_a_document_or_the_collection_is_deleted_meanwhile(tmp_path):
    import threading
    import time

    class Acting(io.RawIOBase):  # runs `action` at the archive's first write (tarfile writes 10 KiB at a time)
        def __init__(self, action) -> None:
            self.action, self.acted = action, False

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if not self.acted:
                self.acted = True
                self.action()
            return len(data)

    collections = open_collections("edge", tmp_path)
    try:
        collection = fill(collections, "reports", MULTI)
        last = collection.documents()[-1]["id"]
        with pytest.raises(Conflict, match=f"document '{last}' was deleted"):
            export_collection(collection, Acting(lambda: collection.delete(last)))

        deleting = threading.Thread(target=collections.delete, args=("reports",))

        def delete_the_collection() -> None:
            deleting.start()  # it waits for the export, which stops at its next page
            while not collection.stopping:
                time.sleep(0.01)

        with pytest.raises(NotFound, match="deleted during the export"):
            export_collection(collection, Acting(delete_the_collection))
        deleting.join(10)
        assert collections.names() == []
    finally:
        close_collections(collections)


# ---------------------------------------------------------------------------- all or nothing
@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    """The archive of a filled multi-vector collection (4 documents, 7 pages)."""
    root = tmp_path_factory.mktemp("archive")
    collections = open_collections("edge", root)
    try:
        buffer = io.BytesIO()
        export_collection(fill(collections, "reports", MULTI), buffer)
        return buffer.getvalue()
    finally:
        close_collections(collections)


@pytest.fixture(params=BACKENDS)
def target(request, tmp_path):
    """Collections holding one collection `existing`, on each backend."""
    collections = open_collections(request.param, tmp_path)
    collections.create("existing", binding_of(MULTI))
    yield collections
    close_collections(collections)


def unchanged(collections: Collections, root: Path):
    """A check that `collections` and the files under `root` are as they were when this was called."""
    names, files = collections.names(), tree(root)
    server = sorted(c.name for c in collections.qdrant.get_collections().collections) if collections.qdrant else None

    def check() -> None:
        assert collections.names() == names and tree(root) == files
        if collections.qdrant is not None:
            assert sorted(c.name for c in collections.qdrant.get_collections().collections) == server

    return check


def test_an_import_failing_half_way_leaves_nothing(target, archive, tmp_path, monkeypatch):
    store_class = type(target.get("existing").store)
    add_document = store_class.add_document
    calls = []

    def failing_on_the_third_document(self, document_id, pages, **kwargs):
        calls.append(document_id)
        if len(calls) == 3:
            next(iter(pages))
            raise RuntimeError("injected failure")
        return add_document(self, document_id, pages, **kwargs)

    monkeypatch.setattr(store_class, "add_document", failing_on_the_third_document)
    check = unchanged(target, tmp_path / "data")
    with pytest.raises(RuntimeError, match="injected"):
        import_collection(target, io.BytesIO(archive), "copy")
    check()
    monkeypatch.undo()

    class Interrupted(io.RawIOBase):  # the connection an archive arrives on, dropped mid-way
        def __init__(self) -> None:
            self.data, self.position = archive, 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            if self.position > len(self.data) * 2 // 3:
                raise ConnectionResetError("the connection dropped")
            size = min(len(buffer), 4096)
            buffer[:size] = self.data[self.position : self.position + size]
            self.position += size
            return size

    with pytest.raises(ConnectionResetError):
        import_collection(target, io.BufferedReader(Interrupted()), "copy")
    check()
    assert import_collection(target, io.BytesIO(archive), "copy").store.page_count() == 7  # the name is free


def test_a_build_a_crash_interrupted_is_removed_at_the_next_open(target, tmp_path, monkeypatch):
    check = unchanged(target, tmp_path / "data")
    monkeypatch.setattr(Collections, "_discard_build", lambda *args: None)  # the process "dies": no clean-up
    build = target.building("crashed", binding_of(MULTI), binding_of(MULTI).schema)
    collection = build.__enter__()
    collection.store.add_document("a" * 32, iter([np.ones((3, 128), np.float32)]))
    build.__exit__(RuntimeError, RuntimeError("killed"), None)
    collection.close()
    monkeypatch.undo()
    assert any(".importing-crashed-" in path for path in tree(tmp_path / "data"))
    with pytest.raises(NotFound):  # on a Qdrant server it is listed (its mark is only read on opening)
        target.get("crashed")
    reopened = Collections(tmp_path / "data", qdrant=target.qdrant)  # the next start
    assert "crashed" not in reopened.names()
    check()


def test_an_import_under_a_taken_or_bad_name_is_refused_before_anything_is_written(target, archive, tmp_path):
    check = unchanged(target, tmp_path / "data")
    with pytest.raises(Conflict, match="'existing' already exists"):
        import_collection(target, io.BytesIO(archive), "existing")
    with pytest.raises(InvalidInput, match="collection name"):
        import_collection(target, io.BytesIO(archive), "../escape")
    check()


# ---------------------------------------------------------------------------- bad archives
def members(data: bytes) -> list[list]:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [[member, archive.extractfile(member).read()] for member in archive.getmembers()]


def rebuilt(entries: list[list]) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in entries:
            if member.isreg():
                member.size = len(data)
            archive.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buffer.getvalue()


def edited(archive: bytes, change) -> bytes:
    entries = members(archive)
    change(entries)
    return rebuilt(entries)


def json_edit(name_end: str, **changes):
    def change(entries):
        entry = next(entry for entry in entries if entry[0].name.endswith(name_end))
        entry[1] = json.dumps(json.loads(entry[1]) | changes).encode()

    return change


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def page_replaced(array: np.ndarray):
    def change(entries):
        next(entry for entry in entries if entry[0].name.endswith("00001.npy"))[1] = npy(array)

    return change


def drop_member(suffix: str):
    def change(entries):
        entries.remove(next(entry for entry in entries if entry[0].name.endswith(suffix)))

    return change


def layouts_replaced(first_page=None, *, whole=None):
    """The first document's patches.json: its first page's layout `first_page`, or all of it `whole`."""

    def change(entries):
        entry = next(entry for entry in entries if entry[0].name.endswith("patches.json"))
        pages = len(json.loads(entry[1]))
        entry[1] = json.dumps(whole if whole is not None else [first_page] + [None] * (pages - 1)).encode()

    return change


def renamed(suffix: str, new_name: str):
    def change(entries):
        next(entry for entry in entries if entry[0].name.endswith(suffix))[0].name = new_name

    return change


def symlinked(entries):
    import tarfile

    entry = next(entry for entry in entries if entry[0].name.endswith("/file"))
    link = tarfile.TarInfo(entry[0].name)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    entry[:] = [link, b""]


def fewer_pages(entries):
    entry = next(entry for entry in entries if entry[0].name.endswith("record.json") and b'"pages": 4' in entry[1])
    entry[1] = entry[1].replace(b'"pages": 4', b'"pages": 3')


def flip_a_file_byte(entries):
    entry = next(entry for entry in entries if entry[0].name.endswith("/file"))
    entry[1] = bytes([entry[1][0] ^ 1]) + entry[1][1:]


BAD_ARCHIVES = {
    "not an archive": (lambda good: b"%PDF-1.7 not a tar" * 200, "not a tar archive"),
    "empty": (lambda good: b"", "not a tar archive"),
    "another format version": (lambda good: edited(good, json_edit(MANIFEST, version=3)), "format version 3"),
    "another format": (lambda good: edited(good, json_edit(MANIFEST, format="zip")), "names format 'zip'"),
    "truncated in a member": (lambda good: good[: len(good) // 2 + 100], "truncated"),
    "truncated between members": (lambda good: edited(good, lambda e: e.pop()), r"ends where .*\.npy should be"),
    "a document missing": (lambda good: edited(good, json_edit(MANIFEST, documents=5)), "ends where a document"),
    "a page more than the manifest says": (lambda good: edited(good, json_edit(MANIFEST, pages=8)), "hold 7"),
    "a member after the last document": (
        lambda good: edited(good, lambda e: e.append([type(e[0][0])("notes.txt"), b"hi"])),
        "'notes.txt' follows",
    ),
    "a file that is not its record's": (lambda good: edited(good, flip_a_file_byte), "SHA-256"),
    "a record without pages": (lambda good: edited(good, json_edit("record.json", pages=0)), "pages must be a count"),
    "a record with fewer pages than its members": (
        lambda good: edited(good, fewer_pages),
        r"patches\.json must list 3 patch layouts",
    ),
    "patch layouts missing": (lambda good: edited(good, drop_member("patches.json")), r"found member .*00001\.npy"),
    "patch layouts that are no list": (
        lambda good: edited(good, layouts_replaced(whole={"grid": [1, 1]})),
        "must list",
    ),
    "a patch layout past its page's rows": (
        lambda good: edited(good, layouts_replaced({"grid": [1, 1], "rows": [[70000, 1]]})),
        r"patches\.json, page 1: .*reach row 70001",
    ),
    "a patch layout whose runs miss its grid": (
        lambda good: edited(good, layouts_replaced({"grid": [1, 2], "rows": [[0, 1]]})),
        r"count 1 patches; its 1x2 grid has 2",
    ),
    "a record of another id": (lambda good: edited(good, json_edit("record.json", id="0" * 32)), "id '0000"),
    "bad metadata": (lambda good: edited(good, json_edit("record.json", metadata=[1])), "metadata"),
    "vectors of the wrong width": (
        lambda good: edited(good, page_replaced(np.ones((5, 64), np.float16))),
        r"shape \(5, 64\)",
    ),
    "float32 vectors": (lambda good: edited(good, page_replaced(np.ones((5, 128), np.float32))), "float32"),
    "vectors that are not finite": (
        lambda good: edited(good, page_replaced(np.full((5, 128), np.nan, np.float16))),
        "not finite",
    ),
    "a page that is no .npy": (
        lambda good: edited(good, lambda e: e.__setitem__(-1, [e[-1][0], b"not numpy"])),
        "not an .npy",
    ),
    "a schema that is not the binding's": (
        lambda good: edited(good, json_edit(MANIFEST, schema={"dim": 64, "multi_vector": True})),
        "does not match",
    ),
    "a path escaping the target": (lambda good: edited(good, renamed("record.json", "../../evil.json")), "evil"),
    "an absolute path": (lambda good: edited(good, renamed("/file", "/tmp/pagelens-evil")), "pagelens-evil"),
    "a symbolic link": (lambda good: edited(good, symlinked), "not a regular file"),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_a_bad_archive_is_refused_naming_what_is_wrong_and_nothing_is_written(target, archive, tmp_path, case):
    from pagelens.errors import UnprocessableDocument

    make, message = BAD_ARCHIVES[case]
    check = unchanged(target, tmp_path / "data")
    with pytest.raises(UnprocessableDocument, match=message):
        import_collection(target, io.BytesIO(make(archive)), "copy")
    check()
    assert not Path("/tmp/pagelens-evil").exists() and not (tmp_path.parent / "evil.json").exists()
