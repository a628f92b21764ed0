"""Document records (`files/<id>.json`, beside each uploaded file): the fields a reader sees, the
file's media type, and an in-memory index of the metadata keys the documents have.

A record is `{"id", "name", "pages", "metadata", "kind", "dpi", "bytes", "sha256", "created_at"}`;
records written before `bytes`, `sha256` and `created_at` existed lack them (collection.py fills the
first two from the file when a document is read; `created_at` stays null). `metadata_pending`
marks a record whose metadata change may not have reached every page yet (collection.py, `patch_metadata`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pagelens.codecs.images import image_media_type

PENDING = "metadata_pending"
DOCUMENT_FIELDS = ("id", "name", "pages", "bytes", "sha256", "metadata", "created_at", "kind", "dpi")
PDF_MEDIA = "application/pdf"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """What readers see of a record: every documented field (null when an old record lacks it), and
    whatever else it holds but the internal marks."""
    return {field: record.get(field) for field in DOCUMENT_FIELDS} | {
        key: value for key, value in record.items() if key != PENDING and key not in DOCUMENT_FIELDS
    }


def utc_now() -> str:
    """The current time as ISO 8601 UTC to the second, e.g. `2026-05-09T07:35:25Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def media_type(kind: str | None, data: bytes) -> str:
    """The content type of an uploaded file: application/pdf, image/png, image/jpeg, ..."""
    if kind == "pdf":
        return PDF_MEDIA
    return image_media_type(data) or "application/octet-stream"


class MetadataKeys:
    """The top-level metadata keys of a collection's documents (how many documents have each), kept
    by ingests, metadata changes and deletes, so a search checks its filter's keys without reading
    any record. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._of: dict[str, frozenset[str]] = {}
        self._documents_with: Counter[str] = Counter()

    def set(self, document_id: str, metadata: dict[str, Any]) -> None:
        """Record (or replace) the keys of a document's metadata."""
        with self._lock:
            self._forget(document_id)
            self._of[document_id] = keys = frozenset(metadata)
            self._documents_with.update(keys)

    def discard(self, document_id: str) -> None:
        with self._lock:
            self._forget(document_id)

    def _forget(self, document_id: str) -> None:
        for key in self._of.pop(document_id, ()):
            self._documents_with[key] -= 1
            if self._documents_with[key] == 0:
                del self._documents_with[key]

    def unknown(self, keys: Iterable[str]) -> list[str]:
        """Those of `keys` no document has, sorted."""
        with self._lock:
            return sorted({key for key in keys if key not in self._documents_with})

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._documents_with)
