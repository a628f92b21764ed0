"""PDF and image uploads become page images in bounded batches; bad uploads get typed errors."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from pagelens.errors import UnprocessableDocument, UnsupportedMediaType
from pagelens.index.pdf import count_pages, render_pages, sniff_document
from tests.conftest import encode, make_page


def make_pdf(pages: int) -> bytes:
    """A PDF whose page i is a (200 + 10 i) x 300 point image with a distinct colour. The same
    `pages` give the same bytes (fixed dates: PIL stamps the current second otherwise)."""
    images = [Image.new("RGB", (200 + 10 * i, 300), (10 * i % 256, 100, 200)) for i in range(pages)]
    buffer = io.BytesIO()
    fixed = time.strptime("2026-01-01", "%Y-%m-%d")
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=72,
                   creationDate=fixed, modDate=fixed)  # fmt: skip
    return buffer.getvalue()


def test_pdf_pages_render_in_bounded_batches_at_the_requested_dpi():
    data = make_pdf(11)
    assert sniff_document(data) == "pdf" and count_pages(data) == 11
    batches = list(render_pages(data, dpi=144, batch_pages=4))
    assert [len(batch) for batch in batches] == [4, 4, 3]
    pages = [page for batch in batches for page in batch]
    assert pages[0].size == (400, 600) and pages[10].size == (600, 600)  # 2x at 144 dpi
    assert pages[3].getpixel((50, 50))[0] == 30 and all(page.mode == "RGB" for page in pages)
    resumed = [page for batch in render_pages(data, dpi=72, batch_pages=4, start_page=9) for page in batch]
    assert [page.size for page in resumed] == [(290, 300), (300, 300)]


def test_huge_pages_are_rendered_within_the_pixel_limit():
    (page,) = next(render_pages(make_pdf(1), dpi=600, max_pixels=100_000))
    assert page.size[0] * page.size[1] <= 100_000 * 1.02


def test_an_image_upload_is_one_page():
    data = encode(make_page(120, 90))
    assert sniff_document(data) == "image" and count_pages(data) == 1
    ((page,),) = list(render_pages(data))
    assert page.size == (120, 90)


def test_encrypted_corrupt_empty_and_foreign_uploads():
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(2))))
    writer.encrypt("secret")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    with pytest.raises(UnprocessableDocument, match="encrypted"):
        count_pages(encrypted.getvalue())
    assert count_pages(encrypted.getvalue(), password="secret") == 2
    with pytest.raises(UnprocessableDocument, match="corrupt"):
        count_pages(b"%PDF-1.7\n this is not really a pdf")
    empty = io.BytesIO()
    PdfWriter().write(empty)
    with pytest.raises(UnprocessableDocument, match="no pages"):
        list(render_pages(empty.getvalue()))
    for foreign in (b"PK\x03\x04 a zip", b"just some text", b""):
        with pytest.raises(UnsupportedMediaType):
            sniff_document(foreign)


def test_an_opened_document_renders_every_batch_from_one_opening(pdf_opens):
    from pagelens.index.pdf import open_document

    with open_document(make_pdf(11)) as document:
        assert (document.kind, document.pages) == ("pdf", 11)
        sizes = [[page.size for page in batch] for batch in document.batches(dpi=72, batch_pages=4)]
        assert [len(batch) for batch in sizes] == [4, 4, 3] and sizes[2][-1] == (300, 300)
        assert document.page_image(2, dpi=72).size == (210, 300)
    assert len(pdf_opens) == 1
    list(render_pages(make_pdf(11), batch_pages=2, dpi=36))
    assert len(pdf_opens) == 2, "render_pages opens the document once, not once per batch"
    with open_document(encode(make_page(120, 90))) as image:
        assert (image.kind, image.pages) == ("image", 1)
        assert [[page.size for page in batch] for batch in image.batches()] == [[(120, 90)]]
    assert len(pdf_opens) == 2
