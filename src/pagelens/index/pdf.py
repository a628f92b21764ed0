"""Turning an uploaded file (a PDF or one image) into page images, a bounded batch at a time.

`open_document` opens an upload once: its kind, its page count and its page images, rendered in
order `batch_pages` pages per batch, all come from one opened PDF, closed when the `with` block
ends. PDFs are rendered with pypdfium2 at `dpi` (150 by default), so a 500-page PDF never sits in
memory whole: only the batch being rendered (each page is closed once it is an image). A page
whose rendering would exceed `max_pixels` is rendered at the largest scale that fits. PDFium is not
thread-safe: every call into it (open, render, close) holds one lock, which is released between
batches, so a long ingest does not block other uploads while its pages are embedded.
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
# Re-entrant: a render_pages generator dropped half-way may be finalized (closing its document)
# by the garbage collector while this thread is between two pages of another render.
_PDFIUM_LOCK = threading.RLock()

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


class OpenedDocument:
    """An upload opened once (sniffed, and for a PDF parsed by PDFium): `kind`, `pages` (>= 1), and
    its page images as RGB PIL images. Close it (or use it as a context manager) when done.

    Not for concurrent use: one ingest or one page render at a time per object.
    """

    def __init__(self, data: bytes, *, password: str | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.kind: DocumentKind = sniff_document(data)
        self.max_pixels = max_pixels
        self._data = data
        self._pdf = None
        if self.kind == "image":
            self.pages = 1
            return
        with _PDFIUM_LOCK:
            self._pdf = _open_pdf(data, password)
            self.pages = len(self._pdf)
        if self.pages == 0:
            self.close()
            raise UnprocessableDocument("the PDF has no pages")

    def batches(
        self, *, dpi: int = DEFAULT_DPI, batch_pages: int = DEFAULT_BATCH_PAGES, start_page: int = 0
    ) -> Iterator[list[Image.Image]]:
        """Page images in order, in batches of at most `batch_pages`, from page `start_page` (0-based) on.
        Only the batch being yielded is in memory."""
        if self._pdf is None:
            if self.kind == "image" and start_page == 0:
                yield [decode_image(self._data, max_pixels=self.max_pixels)]
            return
        for first in range(start_page, self.pages, batch_pages):
            with _PDFIUM_LOCK:
                if self._pdf is None:
                    raise ValueError("the document was closed while its pages were being rendered")
                last = min(first + batch_pages, self.pages)
                batch = [_render(self._pdf[number], dpi, self.max_pixels, number) for number in range(first, last)]
            yield batch

    def page_image(self, number: int, *, dpi: int = DEFAULT_DPI) -> Image.Image:
        """Page `number` (1-based) as an RGB image."""
        if not 1 <= number <= self.pages:
            raise ValueError(f"the document has pages 1..{self.pages}, not {number}")
        return next(self.batches(dpi=dpi, batch_pages=1, start_page=number - 1))[0]

    def close(self) -> None:
        if self._pdf is not None:
            with _PDFIUM_LOCK:
                self._pdf.close()
            self._pdf = None

    def __enter__(self) -> OpenedDocument:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_document(
    data: bytes, *, password: str | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> OpenedDocument:
    """Open an upload once for its kind, page count and pages: UnsupportedMediaType for neither a PDF
    nor an image, UnprocessableDocument for an encrypted, corrupt or empty PDF."""
    return OpenedDocument(data, password=password, max_pixels=max_pixels)


def count_pages(data: bytes, *, password: str | None = None) -> int:
    """Pages in a PDF (1 for an image); UnprocessableDocument for a PDF with none."""
    with open_document(data, password=password) as document:
        return document.pages


def render_pages(
    data: bytes,
    *,
    dpi: int = DEFAULT_DPI,
    batch_pages: int = DEFAULT_BATCH_PAGES,
    start_page: int = 0,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    password: str | None = None,
) -> Iterator[list[Image.Image]]:
    """Yield RGB page images in batches of at most `batch_pages`, from page `start_page` (0-based) on,
    from one opening of the document (closed when the generator ends or is closed)."""
    with open_document(data, password=password, max_pixels=max_pixels) as document:
        yield from document.batches(dpi=dpi, batch_pages=batch_pages, start_page=start_page)


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
