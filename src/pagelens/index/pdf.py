"""Turning an uploaded file (a PDF or one image) into page images, a bounded batch at a time.

PDFs are rendered with pypdfium2 at `dpi` (150 by default), `batch_pages` pages per batch, so a
500-page PDF never sits in memory whole. A page whose rendering would exceed `max_pixels` is
rendered at the largest scale that fits. PDFium is not thread-safe: rendering holds one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Literal

from PIL import Image

from pagelens.codecs.images import DEFAULT_MAX_IMAGE_PIXELS, SUPPORTED_FORMATS, decode_image, sniff_image_format
from pagelens.errors import UnprocessableDocument, UnsupportedMediaType

DEFAULT_DPI = 150
DEFAULT_BATCH_PAGES = 8
_PDFIUM_LOCK = threading.Lock()

DocumentKind = Literal["pdf", "image"]


def sniff_document(data: bytes) -> DocumentKind:
    """'pdf' or 'image' from the bytes; UnsupportedMediaType for anything else."""
    if data[:1024].lstrip().startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "pdf"
    if sniff_image_format(data) is not None:
        return "image"
    raise UnsupportedMediaType(f"the upload is neither a PDF nor an image ({SUPPORTED_FORMATS})")


def _open_pdf(data: bytes, password: str | None):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as error:
        reason = str(error)
        if "password" in reason.lower():
            raise UnprocessableDocument("the PDF is encrypted: it needs a password") from None
        # PDFium refuses a PDF without pages as it refuses a broken one (its error code is not reliable then).
        raise UnprocessableDocument(f"the PDF is corrupt or has no pages: {reason}") from None


def count_pages(data: bytes, *, password: str | None = None) -> int:
    """Pages in a PDF (1 for an image); UnprocessableDocument for a PDF with none."""
    if sniff_document(data) == "image":
        return 1
    with _PDFIUM_LOCK:
        document = _open_pdf(data, password)
        try:
            pages = len(document)
        finally:
            document.close()
    if pages == 0:
        raise UnprocessableDocument("the PDF has no pages")
    return pages


def render_pages(
    data: bytes,
    *,
    dpi: int = DEFAULT_DPI,
    batch_pages: int = DEFAULT_BATCH_PAGES,
    start_page: int = 0,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    password: str | None = None,
) -> Iterator[list[Image.Image]]:
    """Yield RGB page images in batches of at most `batch_pages`, from page `start_page` (0-based) on."""
    if sniff_document(data) == "image":
        if start_page == 0:
            yield [decode_image(data, max_pixels=max_pixels)]
        return
    total = count_pages(data, password=password)
    for first in range(start_page, total, batch_pages):
        with _PDFIUM_LOCK:
            document = _open_pdf(data, password)
            try:
                batch = [
                    _render(document[number], dpi, max_pixels, number)
                    for number in range(first, min(first + batch_pages, total))
                ]
            finally:
                document.close()
        yield batch


def _render(page, dpi: int, max_pixels: int, number: int) -> Image.Image:
    width_pt, height_pt = page.get_size()
    scale = dpi / 72
    if width_pt * height_pt * scale * scale > max_pixels:
        scale = (max_pixels / (width_pt * height_pt)) ** 0.5
    try:
        image = page.render(scale=scale).to_pil().convert("RGB")
    except Exception as error:  # PDFium raises its own error types per failure
        raise UnprocessableDocument(f"page {number + 1} could not be rendered: {error}") from None
    finally:
        page.close()
    return image
