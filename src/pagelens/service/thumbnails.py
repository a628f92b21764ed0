"""Page thumbnails: a stored page rendered again, resized to a width and JPEG-encoded, with a
validator (ETag) that answers a client's cached copy without rendering anything.

A document's id is the start of its content's SHA-256, so a page's pixels depend only on that id,
the page number, the DPI the document was stored at and the width asked for: the ETag is made of
those and nothing else. Encoded thumbnails are kept in a small in-memory LRU (bytes-bounded), one
per collection service, so a results grid shown twice renders each page once.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from pagelens.errors import NotFound

if TYPE_CHECKING:
    from pagelens.index.collections import Collection
    from pagelens.service.collections import CollectionService

MIN_WIDTH, MAX_WIDTH = 16, 2048  # pixels; the route refuses others with a 400
MEDIA_TYPE = "image/jpeg"
JPEG_QUALITY = 82
CACHE_CONTROL = "private, max-age=86400"  # behind the API key: browsers only, never shared caches
CACHE_BYTES = 32 * 1024 * 1024  # ~1500 thumbnails of 320 px


@dataclass(frozen=True)
class Thumbnail:
    """`data` the JPEG bytes, or None when the client's copy (its If-None-Match) is current."""

    etag: str
    data: bytes | None


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, `*` matches anything)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class ThumbnailCache:
    """Encoded thumbnails by ETag, least recently used dropped first past `max_bytes`. Thread-safe."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(etag)
            if data is not None:
                self._entries.move_to_end(etag)
            return data

    def put(self, etag: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(etag, None)
            self._bytes -= len(previous) if previous is not None else 0
            self._entries[etag] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


def page_etag(collection: Collection, document_id: str, page: int, width: int) -> str:
    """The ETag of page `page` (1-based) of a document at `width`; `NotFound` for a page it lacks."""
    record = collection.document(document_id)
    if not 1 <= page <= record["pages"]:
        raise NotFound(f"document {document_id!r} has pages 1..{record['pages']}, not {page}")
    key = f"{collection.name}\0{document_id}\0{record.get('sha256')}\0{record.get('dpi')}\0{page}\0{width}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def render_thumbnail(collection: Collection, document_id: str, page: int, width: int) -> bytes:
    """The page as a JPEG `width` pixels wide (aspect kept; never wider than the page itself). Blocking."""
    from PIL import Image

    image = collection.page_image(document_id, page)
    if image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def page_thumbnail(
    collection: Collection,
    document_id: str,
    page: int,
    width: int,
    *,
    cache: ThumbnailCache,
    if_none_match: str | None = None,
) -> Thumbnail:
    """The thumbnail of a page, or only its ETag when `if_none_match` names it. Blocking."""
    etag = page_etag(collection, document_id, page, width)
    if matches(if_none_match, etag):
        return Thumbnail(etag, None)
    data = cache.get(etag)
    if data is None:
        data = render_thumbnail(collection, document_id, page, width)
        cache.put(etag, data)
    return Thumbnail(etag, data)


_caches: WeakKeyDictionary[CollectionService, ThumbnailCache] = WeakKeyDictionary()


class ThumbnailService:
    """Page thumbnails over the collection service (its read pool), with one cache per service."""

    def __init__(self, collections: CollectionService) -> None:
        self.collections = collections
        self.cache = _caches.setdefault(collections, ThumbnailCache())

    async def thumbnail(
        self, name: str, document_id: str, page: int, *, width: int, if_none_match: str | None = None
    ) -> Thumbnail:
        """Page `page` (1-based) of a document in collection `name` as a JPEG `width` pixels wide,
        with its ETag; only the ETag (`data` None) when `if_none_match` names it, without rendering."""
        return await self.collections._run(
            lambda: page_thumbnail(
                self.collections.index().get(name), document_id, page, width, cache=self.cache,
                if_none_match=if_none_match,
            )
        )  # fmt: skip
