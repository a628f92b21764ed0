"""Documents users have: filled-in forms are drawn, encrypted PDFs open with their password (kept
decrypted, the password nowhere), multi-page TIFFs are a page per frame."""

from __future__ import annotations

import io
import logging

import numpy as np
import pypdfium2
import pytest
from PIL import Image

from pagelens.errors import InvalidInput, UnprocessableDocument
from pagelens.index.collections import Collections
from pagelens.index.pdf import RenderPool, open_document, sniff_document
from tests.conftest import make_page
from tests.index.sample_documents import encrypted, form_pdf, multipage_tiff
from tests.index.test_collection import embed
from tests.index.test_pdf import make_pdf

PASSWORD = "Zq7-unguessable-Pw-4417"


@pytest.fixture(scope="module")
def pool():
    with RenderPool(workers=2, page_timeout=30) as render_pool:
        yield render_pool


def pdfium_render(data: bytes, *, forms: bool, dpi: int = 150, password: str | None = None) -> np.ndarray:
    """Page 1 rendered by pypdfium2 in this process, with or without its form fields drawn: (H, W, 3) uint8 RGB."""
    document = pypdfium2.PdfDocument(data, password=password)
    try:
        if forms:
            document.init_forms()
        page = document[0]
        return np.asarray(page.render(scale=dpi / 72, may_draw_forms=forms).to_pil().convert("RGB"))
    finally:
        document.close()


@pytest.mark.parametrize("appearance", [True, False], ids=["appearance-stream", "need-appearances"])
def test_a_filled_form_field_is_drawn_as_pypdfium2_draws_forms(pool, appearance):
    data = form_pdf("Filled in by hand", appearance=appearance)
    with open_document(data, renderer=pool) as document:
        rendered = np.asarray(document.page_image(1, dpi=150))
    with_forms, without_forms = pdfium_render(data, forms=True), pdfium_render(data, forms=False)
    assert (with_forms != without_forms).any(), "the field's value is not drawn with forms: the test proves nothing"
    assert rendered.shape == with_forms.shape and (rendered == with_forms).all()


def test_an_encrypted_pdf_opens_with_its_password_and_is_kept_decrypted(pool):
    plain = form_pdf("Secret form")
    data = encrypted(plain, PASSWORD)
    with pytest.raises(UnprocessableDocument, match=r"^the PDF is encrypted: give its password$"):
        open_document(data, renderer=pool)
    with pytest.raises(UnprocessableDocument, match=r"^wrong password for the encrypted PDF$") as wrong:
        open_document(data, password="not-" + PASSWORD, renderer=pool)
    assert PASSWORD not in repr(wrong.value) and PASSWORD not in str(wrong.value)
    with open_document(data, password=PASSWORD, renderer=pool) as document:
        assert (document.kind, document.pages) == ("pdf", 1)
        kept, image = document.data, np.asarray(document.page_image(1))
    assert kept != data and b"/Encrypt" not in kept and PASSWORD.encode() not in kept
    with open_document(kept, renderer=pool) as again:  # the kept copy needs no password
        assert (np.asarray(again.page_image(1)) == image).all()
    assert (image == pdfium_render(data, forms=True, password=PASSWORD)).all()


def test_a_password_is_ignored_for_a_pdf_that_needs_none(pool):
    plain = make_pdf(2)
    with open_document(plain, password="anything", renderer=pool) as document:
        assert document.pages == 2 and document.data is plain
    owner_only = encrypted(plain, "", owner_password="owner-secret")  # opens without one: many "protected" PDFs
    with open_document(owner_only, password="wrong", renderer=pool) as document:
        assert document.pages == 2 and document.data is owner_only


def test_an_encrypted_upload_is_stored_decrypted_and_the_password_is_nowhere(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    collections = Collections(tmp_path / "data")
    collection = collections.create("c")
    data = encrypted(make_pdf(3), PASSWORD)
    try:
        with pytest.raises(UnprocessableDocument, match="wrong password"):
            collection.add(data, name="e.pdf", metadata={}, embed=embed, dpi=36, password="x" + PASSWORD)
        assert collection.documents() == [] and list(collection.files.iterdir()) == []
        record = collection.add(data, name="e.pdf", metadata={}, embed=embed, dpi=36, password=PASSWORD)
        assert record["created"] and record["pages"] == 3
        image = collection.page_image(record["id"], 2)  # no password needed
        assert image.size == (105, 150)
        again = collection.add(data, name="e.pdf", metadata={}, embed=embed, dpi=36, password=PASSWORD)
        assert not again["created"] and again["id"] == record["id"]
        with pytest.raises(UnprocessableDocument, match="give its password"):  # stored or not, it needs it
            collection.add(data, name="e.pdf", metadata={}, embed=embed, dpi=36)
        assert collection.page_image(record["id"], 2).size == (105, 150)  # the stored one is untouched
    finally:
        collections.close()
    assert PASSWORD not in caplog.text
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"the password is in {path}"


def test_a_multipage_tiff_is_a_page_per_frame_in_order():
    sizes = [(120, 160), (200, 100), (90, 90)]
    data = multipage_tiff(sizes)
    assert sniff_document(data) == "image"
    with open_document(data) as document:
        assert (document.kind, document.pages) == ("image", 3)
        batches = list(document.batches(batch_pages=2))
        assert [[page.size for page in batch] for batch in batches] == [sizes[:2], sizes[2:]]
        expected = [np.asarray(make_page(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
        pages = [page for batch in batches for page in batch]
        assert all(
            page.mode == "RGB" and (np.asarray(page) == e).all() for page, e in zip(pages, expected, strict=True)
        )
        assert (np.asarray(document.page_image(3)) == expected[2]).all()
        assert [page.size for batch in document.batches(start_page=1) for page in batch] == sizes[1:]


def test_a_tiff_page_over_the_pixel_limit_is_refused_naming_it():
    data = multipage_tiff([(100, 100), (400, 400)])
    with open_document(data, max_pixels=50_000) as document, pytest.raises(InvalidInput, match=r"^page 2 of the TIFF"):
        list(document.batches())


def test_a_single_frame_tiff_and_other_images_stay_one_page():
    buffer = io.BytesIO()
    make_page(50, 40).save(buffer, "TIFF")
    gif = io.BytesIO()
    frames = [Image.new("RGB", (30, 20), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    for data in (buffer.getvalue(), gif.getvalue()):
        with open_document(data) as document:
            assert document.pages == 1 and len(next(document.batches())) == 1


def test_a_stored_multipage_tiff_serves_each_page_image(tmp_path):
    collections = Collections(tmp_path / "data")
    collection = collections.create("c")
    try:
        record = collection.add(multipage_tiff([(64, 48), (48, 64)]), name="scan.tiff", metadata={}, embed=embed)
        assert record["pages"] == 2 and collection.store.page_count(record["id"]) == 2
        assert collection.page_image(record["id"], 2).size == (48, 64)
    finally:
        collections.close()
