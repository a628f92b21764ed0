"""Decoding request payload strings (raw base64 or data URIs) into bytes, with the input index in
every error. The image format is sniffed later from the bytes, never taken from a data-URI prefix."""

from __future__ import annotations

import binascii
import re

from pagelens.errors import InvalidInput

_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=_-]")
_ASCII_WHITESPACE = " \t\n\r\v\f"  # a str.find each is ~10x faster than a regex over 60 MB
_DECODE_CHUNK = 4 * 1024 * 1024  # base64 characters per a2b_base64 call (a multiple of 4)
_PREVIEW_CHARS = 40


def _preview(value: str) -> str:
    """`value` cut to ~40 characters, so errors never echo a huge input."""
    return value if len(value) <= _PREVIEW_CHARS else value[:_PREVIEW_CHARS] + "..."


def is_image_data_uri(value: object) -> bool:
    """True for `data:image/<type>[;params];base64,<data>` strings (how OpenAI-style inputs mark an image).

    Case-insensitive; only the part before the first comma is examined, so a huge payload is never copied.
    """
    if not isinstance(value, str) or value[:11].lower() != "data:image/":
        return False
    comma = value.find(",")
    return comma > 0 and value[:comma].lower().endswith(";base64")


def _strip_data_uri(value: str, *, index: int) -> str:
    """The payload after the comma of a `data:<mime>[;params];base64,<payload>` URI (any mime)."""
    header, comma, payload = value.partition(",")
    if not comma:
        raise InvalidInput(f"malformed data URI (no comma before the data): {_preview(header)!r}", index=index)
    if not header.lower().endswith(";base64"):
        raise InvalidInput(f"data URI is not base64-encoded (expected ';base64,'): {_preview(header)!r}", index=index)
    return payload


def decoded_size(payload: str) -> int:
    """Bytes that base64 `payload` (no whitespace, padding optional) decodes to, computed without decoding."""
    return len(payload.rstrip("=")) * 3 // 4


def _base64_problem(payload: str, error: ValueError) -> str:
    bad = _NOT_BASE64.search(payload)
    if bad:
        return f"unexpected character {bad.group()!r}"
    data_chars = len(payload.rstrip("="))
    if data_chars % 4 == 1:
        return f"{data_chars} data characters cannot be 1 more than a multiple of 4 (truncated?)"
    reason = str(error)
    return reason[:1].lower() + reason[1:]


def _a2b(standard: str) -> bytes:
    """Strict base64 decoding of an ASCII str (read in place), in 4 MB slices when it is larger:
    one call holds the GIL ~4 ms a MB, so a 60 MB image would stall the event loop ~240 ms."""
    if len(standard) <= _DECODE_CHUNK:
        return binascii.a2b_base64(standard, strict_mode=True)
    parts = [
        binascii.a2b_base64(standard[start : start + _DECODE_CHUNK], strict_mode=True)
        for start in range(0, len(standard), _DECODE_CHUNK)
    ]
    return b"".join(parts)


def decode_base64_image(value: object, *, index: int, max_bytes: int | None = None) -> bytes:
    """Image bytes from raw base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)
    or a `data:<any mime>;base64,` URI. Strict: characters outside the alphabet are an error.

    `max_bytes` (per image) is checked from the string length before decoding. Every failure is
    `InvalidInput(..., index=index)`. Memory: the payload is copied only when it needs a change
    (whitespace, the URL-safe alphabet, missing padding); a 60 MB string costs its bytes, not
    three more copies of itself.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"image must be a base64 string, got {type(value).__name__}", index=index)
    payload = value.lstrip()
    from_data_uri = payload[:5].lower() == "data:"
    if from_data_uri:
        payload = _strip_data_uri(payload, index=index)
    if not payload.isascii() or any(space in payload for space in _ASCII_WHITESPACE):
        payload = "".join(payload.split())  # base64 wrapped at 76 columns, stray spaces, CRLF
    if not payload:
        raise InvalidInput(
            "data URI has no data after the comma" if from_data_uri else "image is an empty string", index=index
        )
    if max_bytes is not None:
        size = decoded_size(payload)
        if size > max_bytes:
            raise InvalidInput(
                f"image is {size:,} bytes, {size - max_bytes:,} over the per-image limit of {max_bytes:,} bytes",
                index=index,
            )
    standard = payload.translate(_URLSAFE_TO_STANDARD) if "-" in payload or "_" in payload else payload
    if len(standard) % 4:
        standard += "=" * (-len(standard) % 4)
    try:
        data = _a2b(standard)
    except ValueError as error:  # binascii.Error, or non-ASCII text
        problem = _base64_problem(payload, error)
        raise InvalidInput(f"invalid base64 image data ({problem}): {_preview(value.strip())!r}", index=index) from None
    if not data:
        raise InvalidInput("image decodes to zero bytes", index=index)
    return data
