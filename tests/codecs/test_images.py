"""Image decoding: sniffed formats, clear errors for non-images, truncation, bombs, zero size."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pagelens.codecs.images import check_image, decode_image, probe_image, reduced_size, sniff_image_format
from pagelens.codecs.text import check_query
from pagelens.errors import InvalidInput
from tests.conftest import encode, make_page


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_is_sniffed_and_decoded_to_rgb(image_format):
    page = make_page(64, 48)
    data = encode(page if image_format != "GIF" else page.convert("P"), image_format)
    assert sniff_image_format(data) == image_format
    decoded = decode_image(data)
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_rgba_and_grayscale_images_become_rgb():
    for mode in ("RGBA", "L", "LA"):
        decoded = decode_image(encode(make_page(30, 20).convert(mode)))
        assert decoded.mode == "RGB"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"%PDF-1.7\n1 0 obj", "PDF"),
        (b"hello, this is plain text", "text"),
        (bytes(range(256)) * 4, "not a supported image format"),
    ],
)
def test_non_images_are_named_for_what_they_are(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        decode_image(data)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_truncated_images_are_rejected(image_format):
    data = encode(make_page(300, 200), image_format)
    with pytest.raises(InvalidInput, match="corrupt"):
        decode_image(data[: len(data) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny compressed row: a decompression bomb shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_rejected_from_the_header():
    with pytest.raises(InvalidInput, match=r"pixels, over the limit|decompression bomb"):
        decode_image(_png_header_only(100_000, 100_000))
    with pytest.raises(InvalidInput, match="over the limit"):
        decode_image(_png_header_only(5000, 5000), max_pixels=1_000_000)


def test_zero_pixel_images_are_rejected():
    with pytest.raises(InvalidInput, match=r"zero size|corrupt"):
        decode_image(_png_header_only(0, 10))
    with pytest.raises(InvalidInput, match="zero size"):
        check_image(Image.new("RGB", (0, 5)))


def test_query_checks():
    assert check_query("what is revenue?") == "what is revenue?"
    for bad, reason in [("", "empty"), ("   ", "empty"), (7, "string"), (None, "string"), ("x" * 20, "limit")]:
        with pytest.raises(InvalidInput, match=reason):
            check_query(bad, max_chars=10)


def test_probe_reads_the_header_only():
    header = probe_image(_png_header_only(5000, 4000))  # no pixel data worth the name: decoding would fail
    assert (header.format, header.width, header.height, header.mode, header.pixels) == ("PNG", 5000, 4000, "RGB", 20e6)
    assert probe_image(encode(make_page(64, 48), "JPEG")).pixels == 64 * 48
    with pytest.raises(InvalidInput, match="corrupt"):
        decode_image(_png_header_only(5000, 4000))
    with pytest.raises(InvalidInput, match="over the limit"):
        probe_image(_png_header_only(5000, 4000), max_pixels=1_000_000)
    with pytest.raises(InvalidInput, match="text"):
        probe_image(b"hello, this is plain text")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_decoding_reduces_large_images_to_the_cap_keeping_aspect(image_format):
    decoded = decode_image(encode(make_page(1200, 900), image_format), max_decoded_pixels=100_000)
    assert decoded.mode == "RGB" and decoded.width * decoded.height <= 100_000
    assert decoded.width * decoded.height > 90_000 and abs(decoded.width / decoded.height - 4 / 3) < 0.01
    assert decode_image(encode(make_page(300, 200), image_format), max_decoded_pixels=100_000).size == (300, 200)


def test_reducing_a_bilevel_scan_keeps_its_thin_strokes():
    scan = Image.new("1", (3000, 2000), 1)
    for x in range(0, 3000, 12):
        scan.paste(0, (x, 0, x + 1, 2000))  # 1-pixel black rules: nearest-neighbour would drop most
    decoded = decode_image(encode(scan), max_decoded_pixels=600_000)
    assert decoded.mode == "RGB" and decoded.size == reduced_size(3000, 2000, 600_000)
    columns = np.asarray(decoded.convert("L"), dtype=np.float32).mean(axis=0)
    assert (columns < 235).sum() >= 200, "most strokes vanished"
