"""Turning an upload (a PDF, an image, an office document) into page images, a bounded batch at a time.

`open_document` opens an upload once: its kind, its page count and its page images, rendered in
order `batch_pages` pages per batch, all come from one opened PDF, closed when the `with` block
ends. PDFs are rendered with pypdfium2 at `dpi` (150 by default) in the worker processes of a
`RenderPool` (index/render_pool.py), a page at a time, so a 500-page PDF never sits in memory
whole: only the batch being built. Filled-in form fields are drawn. An encrypted PDF opens with
its `password` (ignored for a PDF that needs none), and is then kept decrypted (`data`): the
password is held no longer than the opening. A page whose rendering would exceed `max_pixels` is
rendered at the largest scale that fits. Each page has the pool's time limit: a page that
outlasts it, or crashes PDFium, is refused with `UnprocessableDocument` (422) naming it. This
process never calls PDFium itself, so no lock is held while a page renders and documents render
side by side. Office documents become PDFs first (index/office.py); a multi-page TIFF is a page
per frame, decoded one at a time.

A `cancel` event (threading.Event), when given, is looked at between pages and while a page
renders or an office document converts: once set, the worker is killed and `RenderCancelled` raised.

Without a `renderer`, documents render in one pool per process (`default_pool`, default limits:
3 workers, 30 s a page); the service passes a pool built from its settings.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from pagelens.codecs.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    SUPPORTED_FORMATS,
    check_image,
    decode_image,
    sniff_image_format,
)
from pagelens.errors import InvalidInput, UnsupportedMediaType
from pagelens.index.office import OFFICE_FORMATS, OfficeConverter, office_format
from pagelens.index.render_pool import RenderCancelled, RenderPool

__all__ = [
    "DEFAULT_BATCH_PAGES",
    "DEFAULT_DPI",
    "OfficeConverter",
    "OpenedDocument",
    "RenderCancelled",
    "RenderPool",
    "count_pages",
    "default_pool",
    "file_sha256",
    "image_frames",
    "load_source",
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


def load_source(source: bytes | Path) -> bytes | Path:
    """An upload as the ingest reads it: a PDF file stays a path (a render worker opens it and
    reads pages as it needs them, so a 1 GB PDF never sits in this process's memory); any other
    file (an image, an office document) is read into memory; bytes stay bytes."""
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        head = file.read(1024)
    return source if b"%PDF-" in head else source.read_bytes()


def file_sha256(source: bytes | Path) -> str:
    """The SHA-256 of the bytes or of the file's bytes (read a megabyte at a time), as hex."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sniff_document(data: bytes) -> str:
    """What the upload is, from its bytes: 'pdf', 'image', or an office format (OFFICE_FORMATS:
    'docx', 'pptx', 'xlsx', 'odt', 'odp', 'ods'); UnsupportedMediaType for anything else."""
    if data[:1024].lstrip().startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "pdf"
    if sniff_image_format(data) is not None:
        return "image"
    office = office_format(data)
    if office is not None:
        return office
    raise UnsupportedMediaType(
        f"the upload is neither a PDF, an image ({SUPPORTED_FORMATS}) nor an office document "
        f"({', '.join(kind.upper() for kind in OFFICE_FORMATS)})"
    )


class OpenedDocument:
    """An upload opened once (sniffed; an office document converted to PDF; a PDF opened by a render
    worker, decrypted with `password` when it needs one): `source` (what was uploaded, as
    `sniff_document` names it), `kind` ('pdf' or 'image'), `pages` (>= 1), `data` (the bytes to keep
    to render its pages again: the upload, or the PDF it became when converted or decrypted; a PDF
    given as a file's path stays that path), and
    its page images as RGB PIL images. A multi-page TIFF has a page per frame; other images one.
    Close it (or use it as a context manager) when done.

    Not for concurrent use: one ingest or one page render at a time per object.
    """

    def __init__(
        self,
        data: bytes | Path,
        *,
        password: str | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        renderer: RenderPool | None = None,
        cancel: threading.Event | None = None,
        office: OfficeConverter | None = None,
    ) -> None:
        data = load_source(data)  # a PDF file stays a path; the workers read it
        self.source = sniff_document(data) if isinstance(data, bytes) else "pdf"
        self.kind: DocumentKind = "image" if self.source == "image" else "pdf"
        self.max_pixels = max_pixels
        self._renderer: RenderPool | None = None
        if self.source in OFFICE_FORMATS:
            data = (office or OfficeConverter()).convert(data, self.source, cancel=cancel)
        self.data = data
        if self.kind == "image":
            self.pages = image_frames(data)
            return
        renderer = renderer or default_pool()
        self._token = renderer.new_token()
        self._renderer = renderer
        try:
            self.pages, decrypted = renderer.open(self._token, data, password=password, cancel=cancel)
        except BaseException:
            self.close()
            raise
        if decrypted is not None:
            self.data = decrypted  # renders (in any worker) need the password no more

    def batches(
        self,
        *,
        dpi: int = DEFAULT_DPI,
        batch_pages: int = DEFAULT_BATCH_PAGES,
        start_page: int = 0,
        cancel: threading.Event | None = None,
        render_pixels: int | None = None,
    ) -> Iterator[list[Image.Image]]:
        """Page images in order, in batches of at most `batch_pages`, from page `start_page` (0-based) on.
        Only the batch being yielded is in memory. `RenderCancelled` once `cancel` is set.
        `render_pixels` lowers a PDF page's scale so it renders within that many pixels (the most the
        model's processor keeps: rendering more only to shrink it again wastes both steps)."""
        max_pixels = self.max_pixels if render_pixels is None else min(self.max_pixels, render_pixels)
        if self.kind == "image" and self.pages == 1:
            if start_page == 0:
                yield [decode_image(self.data, max_pixels=self.max_pixels)]
            return
        with _frames(self.data) if self.kind == "image" else nullcontext() as frames:
            for first in range(start_page, self.pages, batch_pages):
                batch = []
                for number in range(first, min(first + batch_pages, self.pages)):
                    if cancel is not None and cancel.is_set():
                        raise RenderCancelled("cancelled between pages")
                    if frames is not None:
                        batch.append(_frame(frames, number, self.max_pixels))
                    else:
                        batch.append(self._render(number, dpi, cancel, max_pixels))
                yield batch

    def page_image(self, number: int, *, dpi: int = DEFAULT_DPI, cancel: threading.Event | None = None) -> Image.Image:
        """Page `number` (1-based) as an RGB image."""
        if not 1 <= number <= self.pages:
            raise ValueError(f"the document has pages 1..{self.pages}, not {number}")
        return next(self.batches(dpi=dpi, batch_pages=1, start_page=number - 1, cancel=cancel))[0]

    def page_text(self, number: int) -> str | None:
        """Page `number`'s (1-based) text layer ("" for a page with none); None for an image, which has none."""
        if not 1 <= number <= self.pages:
            raise ValueError(f"the document has pages 1..{self.pages}, not {number}")
        if self._renderer is None:
            return None
        return self._renderer.page_text(self._token, self.data, number - 1)

    def _render(self, number: int, dpi: int, cancel: threading.Event | None, max_pixels: int) -> Image.Image:
        if self._renderer is None:
            raise ValueError("the document was closed while its pages were being rendered")
        return self._renderer.render_page(self._token, self.data, number, dpi=dpi, max_pixels=max_pixels, cancel=cancel)

    def close(self) -> None:
        """Close the document in the workers (idempotent)."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.forget(self._token)

    def __enter__(self) -> OpenedDocument:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def image_frames(data: bytes) -> int:
    """Pages in an image upload: a TIFF's frames (read from its headers, no pixel decoded), else 1."""
    if sniff_image_format(data) != "TIFF":
        return 1
    with _frames(data) as image:
        try:
            return image.n_frames
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InvalidInput(f"corrupt TIFF data: {error}") from None


@contextmanager
def _frames(data: bytes) -> Iterator[Image.Image]:
    """The TIFF `data` opened with PIL (headers only), closed afterwards; InvalidInput if it is not one."""
    try:
        image = Image.open(io.BytesIO(data), formats=["TIFF"])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InvalidInput(f"corrupt TIFF data: {error}") from None
    with image:
        yield image


def _frame(image: Image.Image, number: int, max_pixels: int) -> Image.Image:
    """Frame `number` (0-based) of an opened TIFF as RGB, within `max_pixels`; InvalidInput naming its page."""
    page = f"page {number + 1} of the TIFF"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image.seek(number)
            check_image(image, max_pixels=max_pixels)
            return image.convert("RGB")  # decodes this frame only
        except InvalidInput as error:
            raise InvalidInput(f"{page}: {error.message}") from None
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
            raise InvalidInput(f"{page} is truncated or corrupt: {error}") from None


def open_document(
    data: bytes | Path,
    *,
    password: str | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    renderer: RenderPool | None = None,
    cancel: threading.Event | None = None,
    office: OfficeConverter | None = None,
) -> OpenedDocument:
    """Open an upload once for its kind, page count and pages: UnsupportedMediaType for neither a PDF,
    an image nor an office document (or one with no LibreOffice to convert it: `office`, default
    `OfficeConverter()`), UnprocessableDocument for an encrypted PDF without its password (or a wrong
    one), a corrupt or empty PDF, one that outlasts the page time limit to open, or an office document
    LibreOffice cannot convert within its time limit."""
    return OpenedDocument(
        data, password=password, max_pixels=max_pixels, renderer=renderer, cancel=cancel, office=office
    )


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
