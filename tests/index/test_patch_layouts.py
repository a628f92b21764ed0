"""Patch layouts (index/patches.py) in the stores and snapshots: kept with each page as given, read
back with its vectors, None for pages stored without one (as before layouts existed), checked
against the page's rows before anything is stored, and carried by an export and import (a
version-1 archive, from before layouts, still imports: its pages have none)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pagelens.errors import InvalidInput
from pagelens.index.patches import check_layout, patch_mask
from pagelens.index.snapshot import export_collection, import_collection
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf
from tests.index.test_snapshot import (
    BACKENDS,
    MULTI,
    SINGLE,
    binding_of,
    close_collections,
    drop_member,
    edited,
    json_edit,
    open_collections,
)


def layout_for(rows: int) -> dict:
    """A layout of two runs with a row between them (as a tiled page has): a 2 x ((rows - 1) // 2) grid."""
    side = (rows - 1) // 2
    return {"grid": [2, side], "rows": [[0, side], [side + 1, side]]}


def with_layouts(images):
    """An embed function returning `(vectors, layout)` per page, as the engine's embed_pages does."""
    pages = [MULTI.expected(MULTI.prepare_image(image)) for image in images]
    return [(vectors, layout_for(len(vectors)) if len(vectors) >= 3 else None) for vectors in pages]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_keeps_each_pages_layout_and_reads_it_back_with_its_vectors(tmp_path, backend):
    collections = open_collections(backend, tmp_path)
    try:
        store = collections.create("c", binding_of(MULTI)).store
        rng = np.random.default_rng(0)
        pages = [rng.standard_normal((rows, 128)).astype(np.float32) for rows in (40, 9, 30)]
        layouts = [layout_for(40), layout_for(9), None]
        store.add_document("doc", iter([(pages[0], layouts[0]), (pages[1], layouts[1]), pages[2]]), name="d")
        for number, (page, layout) in enumerate(zip(pages, layouts, strict=True), start=1):
            vectors, stored = store.read_page("doc", number)
            np.testing.assert_array_equal(vectors, page.astype(np.float16))
            assert stored == layout
        assert store.page_layouts("doc") == {1: layouts[0], 2: layouts[1]}
        with pytest.raises(InvalidInput, match=r"page 2: .*rows reach row 39; the page has 30"):
            store.add_document("bad", iter([(pages[0], layouts[0]), (pages[2], layouts[0])]))
    finally:
        close_collections(collections)


def test_a_single_vector_page_takes_no_layout(tmp_path):
    collections = open_collections("edge", tmp_path)
    try:
        store = collections.create("c", binding_of(SINGLE)).store
        with pytest.raises(InvalidInput, match="single-vector page has no patch layout"):
            store.add_document("doc", iter([(np.ones(48, np.float32), layout_for(40))]))
    finally:
        close_collections(collections)


def test_a_layout_is_checked_and_its_mask_marks_its_runs():
    layout = check_layout({"grid": [2, 3], "rows": [[1, 3], [6, 3]]}, 10)
    assert patch_mask(layout, 10).nonzero()[0].tolist() == [1, 2, 3, 6, 7, 8]
    for bad, message in [
        ({"grid": [2, 3]}, "a patch layout is"),
        ({"grid": [0, 3], "rows": [[0, 1]]}, "two positive counts"),
        ({"grid": [2, 3], "rows": [[4, 3], [1, 3]]}, r"\[1, 3\] is not \[start, count\] after row 7"),
        ({"grid": [2, 3], "rows": [[0, 6]]}, None),
        ({"grid": [2, 3], "rows": [[5, 6]]}, "reach row 11; the page has 10"),
        ({"grid": [True, 3], "rows": [[0, 3]]}, "two positive counts"),
    ]:
        if message is None:
            assert check_layout(bad, 10) == bad
            continue
        with pytest.raises(InvalidInput, match=message):
            check_layout(bad, 10)


def fill_with_layouts(collections, name: str):
    collection = collections.create(name, binding_of(MULTI))
    collection.add(make_pdf(3), name="r.pdf", metadata={}, embed=with_layouts, dpi=200)
    collection.add(encode(make_page(200, 260, 4)), name="s.png", metadata={}, embed=with_layouts)
    return collection


def layouts_of(collection) -> dict:
    return {d["id"]: collection.store.page_layouts(d["id"]) for d in collection.documents()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_survive_an_export_and_import(tmp_path, backend):
    source = open_collections("edge", tmp_path / "source")
    target = open_collections(backend, tmp_path / "target")
    try:
        original = fill_with_layouts(source, "reports")
        expected = layouts_of(original)
        assert sum(len(pages) for pages in expected.values()) == 4  # every page has one
        buffer = io.BytesIO()
        export_collection(original, buffer)
        copy = import_collection(target, io.BytesIO(buffer.getvalue()), "copy")
        assert layouts_of(copy) == expected
        for document in copy.documents():
            for page in range(1, document["pages"] + 1):
                vectors, layout = copy.stored_page(document["id"], page)
                assert layout == expected[document["id"]][page]
                np.testing.assert_array_equal(vectors, original.stored_page(document["id"], page)[0])
    finally:
        close_collections(source)
        close_collections(target)


def test_a_version_1_archive_imports_with_pages_without_layouts(tmp_path):
    collections = open_collections("edge", tmp_path)
    try:
        buffer = io.BytesIO()
        export_collection(fill_with_layouts(collections, "reports"), buffer)

        def as_version_1(entries):
            json_edit("pagelens-collection.json", version=1)(entries)
            while any(entry[0].name.endswith("patches.json") for entry in entries):
                drop_member("patches.json")(entries)

        copy = import_collection(collections, io.BytesIO(edited(buffer.getvalue(), as_version_1)), "old")
        assert all(pages == {} for pages in layouts_of(copy).values()) and len(copy.documents()) == 2
        assert copy.store.page_count() == 4
    finally:
        close_collections(collections)
