"""Decoding and checking page images before they reach a model.

The format is sniffed from the bytes, never trusted from a name or data-URI prefix. Two steps:
`probe_image` reads only the header (format, size, mode) and checks the pixel limit, so a
decompression bomb costs nothing and the request path never decodes a pixel; `decode_image`
does the full decode later (the engine's preprocessing thread), reducing an image over
`max_decoded_pixels` while it decodes, so one page costs at most ~4 bytes x that many pixels
there (PIL keeps RGB as 4 bytes a pixel). Every failure is an `InvalidInput` saying what is wrong.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from pagelens.errors import InvalidInput

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # a letter page at 600 DPI is ~34 Mpx
# Every family's processor resizes a page below this (ColQwen2.5 to <= 0.6 Mpx, ColPali 448x448,
# Gemma3 896x896, ColModernVBert/ColIdefics3 to a longest edge of 2048; 8 Mpx keeps a longest edge
# of 2828 even for a square), so reducing a larger image to it first changes what the model sees
# very little. It bounds the processor's float copies: a 15 Mpx page cost ColQwen2.5's processor
# +260 MB of RSS, reduced to 8 Mpx +153 MB (and a 64 Mpx one +1.1 GB).
DEFAULT_MAX_DECODED_PIXELS = 8_000_000
# Page images served for viewing are downscaled to this unless the full size is asked for.
PAGE_IMAGE_MAX_PIXELS = 4_000_000

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


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before any pixel is decoded: PIL format name, size, PIL mode."""

    format: str
    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def check_image(image: Image.Image, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise InvalidInput if `image` has no pixels or more than `max_pixels`."""
    if not isinstance(image, Image.Image):
        raise InvalidInput(f"expected a PIL image, got {type(image).__name__}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidInput(f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")


def _open(data: bytes | bytearray | memoryview) -> tuple[Image.Image, str]:
    """`Image.open` on sniffed bytes: lazy, only the header is read. Returns (image, format name)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"expected image bytes, got {type(data).__name__}")
    if not data:
        raise InvalidInput("image data is empty")
    image_format = sniff_image_format(bytes(data[:16]))
    if image_format is None:
        raise InvalidInput(_describe_unsupported(bytes(data[:256])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=[image_format]), image_format
        except Image.DecompressionBombError as error:
            raise InvalidInput(f"image rejected as a decompression bomb: {error}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise InvalidInput(f"corrupt {image_format} data: {error}") from None


def probe_image(data: bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageHeader:
    """The header of image bytes (format sniffed, size and mode read by PIL's lazy open), refused
    with InvalidInput when it is no supported image, has no pixels or more than `max_pixels`.
    No pixel is decoded: truncated or corrupt pixel data is found only by `decode_image`."""
    image, image_format = _open(data)
    with image:
        check_image(image, max_pixels=max_pixels)
        return ImageHeader(image_format, image.width, image.height, image.mode)


def reduced_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `max_pixels` (unchanged when within it)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def reduce_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """`image` resized (Lanczos after a box pre-reduction, aspect kept) to at most `max_pixels`, or
    itself when it is within. Bilevel and palette images are widened first (resizing them would be
    nearest-neighbour, dropping thin strokes)."""
    size = reduced_size(image.width, image.height, max_pixels)
    if size == image.size:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        image = image.convert("RGB")
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_decoded_pixels: int | None = None,
) -> Image.Image:
    """Decode image bytes into a fully loaded RGB PIL image (first frame of animations).

    Refused like `probe_image` from the header first. With `max_decoded_pixels`, a larger image
    is reduced to that many pixels (aspect kept) as it is decoded: JPEGs decode at a smaller DCT
    scale, other formats decode in their own mode (1 byte a pixel for bilevel and grey) and are
    resized before the RGB copy, so the RGB image never exceeds ~4 x max_decoded_pixels bytes.
    """
    image, image_format = _open(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        check_image(image, max_pixels=max_pixels)
        try:
            image.seek(0)
            if max_decoded_pixels is not None and image.width * image.height > max_decoded_pixels:
                if image_format == "JPEG":
                    image.draft("RGB", reduced_size(image.width, image.height, max_decoded_pixels))
                image.load()
                image = reduce_image(image, max_decoded_pixels)
            rgb = image.convert("RGB")  # forces the full decode: truncated data fails here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise InvalidInput(f"truncated or corrupt {image_format} data: {error}") from None
    return rgb
