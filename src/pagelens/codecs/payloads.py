"""Decoding request payload strings (raw base64 or data URIs) into bytes, with the input index in
every error. The image format is sniffed later from the bytes, never taken from a data-URI prefix."""

from __future__ import annotations

import base64
import binascii
import re

from pagelens.errors import InvalidInput

_WHITESPACE = re.compile(r"\s+")
_URLSAFE = str.maketrans("-_", "+/")


def _preview(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def is_image_data_uri(value: object) -> bool:
    """True for `data:image/...;base64,...` strings (how OpenAI-style inputs mark an image)."""
    return isinstance(value, str) and value[:11].lower() == "data:image/" and ";base64," in value[:200].lower()


def decode_base64_image(value: object, *, index: int, max_bytes: int | None = None) -> bytes:
    """Bytes of a raw-base64 (standard or URL-safe, padding optional) or data-URI string.

    `max_bytes` is checked from the string length before decoding, so a huge payload costs nothing.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"image must be a base64 string, got {type(value).__name__}", index=index)
    payload = value
    if payload[:5].lower() == "data:":
        header, comma, rest = payload.partition(",")
        if not comma:
            raise InvalidInput(f"malformed data URI (no comma): {_preview(header)!r}", index=index)
        if not header.lower().endswith(";base64"):
            raise InvalidInput(f"data URI is not base64-encoded: {_preview(header)!r}", index=index)
        payload = rest
    payload = _WHITESPACE.sub("", payload)
    if not payload:
        raise InvalidInput("image is an empty string", index=index)
    if max_bytes is not None and len(payload) * 3 // 4 > max_bytes + 2:
        raise InvalidInput(
            f"image is about {len(payload) * 3 // 4:,} bytes, over the per-image limit of {max_bytes:,}", index=index
        )
    payload = payload.translate(_URLSAFE)
    payload += "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"invalid base64 image data: {_preview(value)!r}", index=index) from None
    if not data:
        raise InvalidInput("image decodes to zero bytes", index=index)
    return data
