"""Retrieved pages -> the chat messages an answer model reads.

    pages = [PromptPage(1, "q3.pdf", 4, image=jpeg_data_uri(image, 1_000_000)), ...]
    messages = build_messages("What was the revenue?", pages)

One system message asks for an answer from the pages only, citing them by number. One user
message holds, per page in retrieval order, a label `[n] <document name>, page <p>` and the page:
an `image_url` part (a JPEG data URI, at most `max_pixels`) for a vision-language model, or, for a
text-only one (`images=False`), the page's PDF text layer, marked `(this page has no text layer)`
when it has none; the question comes last. Text-only, the user message is one string (servers
for text models do not all take content parts).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from pagelens.codecs.images import reduce_image
from pagelens.errors import UnprocessableDocument
from pagelens.rag.generator import ChatMessage

JPEG_QUALITY = 85
PAGE_TEXT_MAX_CHARS = 8000  # of each page's text layer (a dense page holds ~3-5k)
NO_TEXT_LAYER = "(this page has no text layer)"

SYSTEM_PROMPT = (
    "You answer questions about documents using only the numbered pages you are given. Cite every "
    "page you use by its number in square brackets, e.g. [1] or [2][3], right after the statement it "
    "supports. If the pages do not contain the answer, say so plainly instead of guessing."
)


@dataclass(frozen=True)
class PromptPage:
    """One retrieved page as the prompt shows it: its citation `number` (1-based, retrieval order),
    its document's `name` and `page` (1-based), and its `image` (a JPEG data URI) or `text` (its
    text layer; None: it has none)."""

    number: int
    name: str
    page: int
    image: str | None = None
    text: str | None = None

    @property
    def label(self) -> str:
        return f"[{self.number}] {self.name or 'document'}, page {self.page}"


def jpeg_data_uri(image: Image.Image, max_pixels: int, *, quality: int = JPEG_QUALITY) -> str:
    """`image` resized to at most `max_pixels` (aspect kept) as a `data:image/jpeg;base64,...` URI."""
    reduced = reduce_image(image, max_pixels)
    if reduced.mode != "RGB":
        reduced = reduced.convert("RGB")
    buffer = io.BytesIO()
    reduced.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def check_text_layers(pages: Sequence[PromptPage]) -> None:
    """Refuse a text-only prompt whose pages have no text at all (scans, images): a model that reads
    no images would answer from nothing. `UnprocessableDocument` (422) saying what would work."""
    if pages and not any(page.text and page.text.strip() for page in pages):
        raise UnprocessableDocument(
            f"none of the {len(pages)} retrieved pages has a text layer (scanned or image pages), and the "
            "answer model takes text only (--llm-images off); serve a vision-language model with "
            "--llm-images on, or ask a collection of PDFs with text"
        )


def build_messages(question: str, pages: Sequence[PromptPage], *, images: bool = True) -> list[ChatMessage]:
    """The system and user messages for `question` over `pages` (in citation order)."""
    intro = f"Pages retrieved for the question ({len(pages)}):"
    ask = f"Question: {question}\nAnswer from the pages above, citing them as [n]."
    system = {"role": "system", "content": SYSTEM_PROMPT}
    if not images:
        blocks = [intro]
        for page in pages:
            text = (page.text or "").strip()
            body = text[:PAGE_TEXT_MAX_CHARS] + (" [...]" if len(text) > PAGE_TEXT_MAX_CHARS else "")
            blocks.append(f"{page.label}:\n{body or NO_TEXT_LAYER}")
        blocks.append(ask)
        return [system, {"role": "user", "content": "\n\n".join(blocks)}]
    parts: list[dict] = [{"type": "text", "text": intro}]
    for page in pages:
        if page.image is None:
            raise ValueError(f"page {page.label} has no image for a vision prompt")
        parts.append({"type": "text", "text": page.label})
        parts.append({"type": "image_url", "image_url": {"url": page.image}})
    parts.append({"type": "text", "text": ask})
    return [system, {"role": "user", "content": parts}]
