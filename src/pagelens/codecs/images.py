"""Decoding and checking page images before they reach a model.

The format is sniffed from the bytes, never trusted from a name or data-URI prefix. The pixel
limit is checked from the header, before any pixel is decoded, so a decompression bomb costs
nothing. Every failure is an `InvalidInput` saying what is wrong.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from pagelens.errors import InvalidInput

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # a letter page at 600 DPI is ~34 Mpx

# Magic bytes of the formats we accept, as (format name for PIL, prefix, offset) triples.
_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("PNG", b"\x89PNG\r\n\x1a\n", 0),
    ("JPEG", b"\xff\xd8\xff", 0),
    ("GIF", b"GIF87a", 0),
    ("GIF", b"GIF89a", 0),
    ("BMP", b"BM", 0),
    ("TIFF", b"II*\x00", 0),
    ("TIFF", b"MM\x00*", 0),
    ("WEBP", b"WEBP", 8),
)
_OTHER_KNOWN: tuple[tuple[str, bytes], ...] = (
    ("a PDF document", b"%PDF"),
    ("a ZIP archive", b"PK\x03\x04"),
    ("a GZIP archive", b"\x1f\x8b"),
)
SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF, BMP, TIFF"
_MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "BMP": "image/bmp",
                "TIFF": "image/tiff", "WEBP": "image/webp"}  # fmt: skip


def sniff_image_format(data: bytes) -> str | None:
    """The PIL format name of `data` from its magic bytes, or None if it is no supported image."""
    for name, prefix, offset in _SIGNATURES:
        if data[offset : offset + len(prefix)] == prefix:
            if name == "WEBP" and data[:4] != b"RIFF":
                continue
            return name
    return None


def image_media_type(data: bytes) -> str | None:
    """The content type of an image from its magic bytes (image/png, ...), or None if it is none."""
    name = sniff_image_format(data)
    return _MEDIA_TYPES[name] if name is not None else None


def _describe_unsupported(data: bytes) -> str:
    for description, prefix in _OTHER_KNOWN:
        if data.startswith(prefix):
            return f"data is {description}, not an image (supported: {SUPPORTED_FORMATS})"
    sample = data[:256]
    if sample.strip() and all(32 <= byte < 127 or byte in (9, 10, 13) for byte in sample):
        return f"data looks like text, not an image (supported: {SUPPORTED_FORMATS})"
    return f"data is not a supported image format ({SUPPORTED_FORMATS})"


def check_image(image: Image.Image, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise InvalidInput if `image` has no pixels or more than `max_pixels`."""
    if not isinstance(image, Image.Image):
        raise InvalidInput(f"expected a PIL image, got {type(image).__name__}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidInput(f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode image bytes into a fully loaded RGB PIL image (first frame of animations)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidInput("image data is empty")
    image_format = sniff_image_format(data)
    if image_format is None:
        raise InvalidInput(_describe_unsupported(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[image_format])
        except Image.DecompressionBombError as error:
            raise InvalidInput(f"image rejected as a decompression bomb: {error}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise InvalidInput(f"corrupt {image_format} data: {error}") from None
        check_image(image, max_pixels=max_pixels)
        try:
            image.seek(0)
            rgb = image.convert("RGB")  # forces the full decode: truncated data fails here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise InvalidInput(f"truncated or corrupt {image_format} data: {error}") from None
    return rgb
