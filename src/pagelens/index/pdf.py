"""Turning an uploaded file (a PDF or one image) into page images, a bounded batch at a time.

`open_document` opens an upload once: its kind, its page count and its page images, rendered in
order `batch_pages` pages per batch, all come from one opened PDF, closed when the `with` block
ends. PDFs are rendered with pypdfium2 at `dpi` (150 by default) in the worker processes of a
`RenderPool` (index/render_pool.py), a page at a time, so a 500-page PDF never sits in memory
whole: only the batch being built. A page whose rendering would exceed `max_pixels` is rendered
at the largest scale that fits. Each page has the pool's time limit: a page that outlasts it, or
crashes PDFium, is refused with `UnprocessableDocument` (422) naming it. This process never calls
PDFium itself, so no lock is held while a page renders and documents render side by side.

A `cancel` event (threading.Event), when given, is looked at between pages and while a page
renders: once set, the page's worker is killed and `RenderCancelled` raised.

Without a `renderer`, documents render in one pool per process (`default_pool`, default limits:
3 workers, 30 s a page); the service passes a pool built from its settings.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from typing import Literal

from PIL import Image

from pagelens.codecs.images import DEFAULT_MAX_IMAGE_PIXELS, SUPPORTED_FORMATS, decode_image, sniff_image_format
from pagelens.errors import UnsupportedMediaType
from pagelens.index.render_pool import RenderCancelled, RenderPool

__all__ = [
    "DEFAULT_BATCH_PAGES",
    "DEFAULT_DPI",
    "OpenedDocument",
    "RenderCancelled",
    "RenderPool",
    "count_pages",
    "default_pool",
    "open_document",
    "render_pages",
    "sniff_document",
]

DEFAULT_DPI = 150
DEFAULT_BATCH_PAGES = 8

DocumentKind = Literal["pdf", "image"]

_default_pool: RenderPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> RenderPool:
    """The process's shared render pool (default limits), started on first use, stopped at exit."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = RenderPool()
            atexit.register(_default_pool.close)
        return _default_pool


def sniff_document(data: bytes) -> DocumentKind:
    """'pdf' or 'image' from the bytes; UnsupportedMediaType for anything else."""
    if data[:1024].lstrip().startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "pdf"
    if sniff_image_format(data) is not None:
        return "image"
    raise UnsupportedMediaType(f"the upload is neither a PDF nor an image ({SUPPORTED_FORMATS})")


class OpenedDocument:
    """An upload opened once (sniffed, and for a PDF opened by a render worker): `kind`, `pages`
    (>= 1), and its page images as RGB PIL images. Close it (or use it as a context manager) when done.

    Not for concurrent use: one ingest or one page render at a time per object.
    """

    def __init__(
        self,
        data: bytes,
        *,
        password: str | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        renderer: RenderPool | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.kind: DocumentKind = sniff_document(data)
        self.max_pixels = max_pixels
        self._data = data
        self._password = password
        self._renderer: RenderPool | None = None
        if self.kind == "image":
            self.pages = 1
            return
        renderer = renderer or default_pool()
        self._token = renderer.new_token()
        self._renderer = renderer
        try:
            self.pages = renderer.count_pages(self._token, data, password=password, cancel=cancel)
        except BaseException:
            self.close()
            raise

    def batches(
        self,
        *,
        dpi: int = DEFAULT_DPI,
        batch_pages: int = DEFAULT_BATCH_PAGES,
        start_page: int = 0,
        cancel: threading.Event | None = None,
    ) -> Iterator[list[Image.Image]]:
        """Page images in order, in batches of at most `batch_pages`, from page `start_page` (0-based) on.
        Only the batch being yielded is in memory. `RenderCancelled` once `cancel` is set."""
        if self.kind == "image":
            if start_page == 0:
                yield [decode_image(self._data, max_pixels=self.max_pixels)]
            return
        for first in range(start_page, self.pages, batch_pages):
            batch = []
            for number in range(first, min(first + batch_pages, self.pages)):
                if cancel is not None and cancel.is_set():
                    raise RenderCancelled("cancelled between pages")
                batch.append(self._render(number, dpi, cancel))
            yield batch

    def page_image(self, number: int, *, dpi: int = DEFAULT_DPI, cancel: threading.Event | None = None) -> Image.Image:
        """Page `number` (1-based) as an RGB image."""
        if not 1 <= number <= self.pages:
            raise ValueError(f"the document has pages 1..{self.pages}, not {number}")
        return next(self.batches(dpi=dpi, batch_pages=1, start_page=number - 1, cancel=cancel))[0]

    def _render(self, number: int, dpi: int, cancel: threading.Event | None) -> Image.Image:
        if self._renderer is None:
            raise ValueError("the document was closed while its pages were being rendered")
        return self._renderer.render_page(
            self._token, self._data, number, dpi=dpi, max_pixels=self.max_pixels, password=self._password,
            cancel=cancel,
        )  # fmt: skip

    def close(self) -> None:
        """Close the document in the workers (idempotent)."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.forget(self._token)

    def __enter__(self) -> OpenedDocument:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_document(
    data: bytes,
    *,
    password: str | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    renderer: RenderPool | None = None,
    cancel: threading.Event | None = None,
) -> OpenedDocument:
    """Open an upload once for its kind, page count and pages: UnsupportedMediaType for neither a PDF
    nor an image, UnprocessableDocument for an encrypted, corrupt or empty PDF (or one that outlasts
    the page time limit to open)."""
    return OpenedDocument(data, password=password, max_pixels=max_pixels, renderer=renderer, cancel=cancel)


def count_pages(data: bytes, *, password: str | None = None, renderer: RenderPool | None = None) -> int:
    """Pages in a PDF (1 for an image); UnprocessableDocument for a PDF with none."""
    with open_document(data, password=password, renderer=renderer) as document:
        return document.pages


def render_pages(
    data: bytes,
    *,
    dpi: int = DEFAULT_DPI,
    batch_pages: int = DEFAULT_BATCH_PAGES,
    start_page: int = 0,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    password: str | None = None,
    renderer: RenderPool | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[list[Image.Image]]:
    """Yield RGB page images in batches of at most `batch_pages`, from page `start_page` (0-based) on,
    from one opening of the document (closed when the generator ends or is closed)."""
    with open_document(data, password=password, max_pixels=max_pixels, renderer=renderer, cancel=cancel) as document:
        yield from document.batches(dpi=dpi, batch_pages=batch_pages, start_page=start_page, cancel=cancel)
