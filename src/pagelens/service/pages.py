"""A document's page images without a collection: what `pagelens embed` embeds from a PDF, a
multi-page TIFF or an office document, rendered as an ingest renders them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pagelens.index.office import OfficeConverter
from pagelens.index.pdf import DEFAULT_BATCH_PAGES, RenderPool, open_document

if TYPE_CHECKING:
    from PIL import Image

    from pagelens.settings import Settings


def document_pages(
    data: bytes,
    settings: Settings,
    *,
    password: str | None = None,
    batch_pages: int = DEFAULT_BATCH_PAGES,
    render_pixels: int | None = None,
) -> Iterator[list[Image.Image]]:
    """RGB page images of an upload, in order, at most `batch_pages` at a time (only that batch in
    memory): a PDF rendered at `settings.pdf_dpi` (within `render_pixels`, the model's page budget,
    as an ingest renders it) in a render pool of its own (closed when the
    generator ends), a TIFF's frames, an image as one page, an office document converted first.
    Errors are the ingest's: UnsupportedMediaType, UnprocessableDocument (an encrypted PDF without
    its `password`), InvalidInput (a corrupt image)."""
    office = OfficeConverter(timeout=settings.office_timeout_seconds)
    with (
        RenderPool(workers=1, page_timeout=settings.pdf_page_timeout_seconds) as renderer,
        open_document(
            data, password=password, max_pixels=settings.max_image_pixels, renderer=renderer, office=office
        ) as document,
    ):
        yield from document.batches(dpi=settings.pdf_dpi, batch_pages=batch_pages, render_pixels=render_pixels)
