"""Base64 / data-URI payload decoding: accepted spellings, the size limit, and bad inputs named by index."""

from __future__ import annotations

import base64
import time

import pytest

from pagelens.codecs import payloads
from pagelens.codecs.images import decode_image
from pagelens.codecs.payloads import decode_base64_image, decoded_size, is_image_data_uri
from pagelens.errors import InvalidInput
from tests.conftest import encode, make_page

PNG = encode(make_page(40, 30))
PNG_B64 = base64.b64encode(PNG).decode()
# Bytes whose standard base64 is full of '+' and '/', so the URL-safe spelling really differs.
URLSAFE_BYTES = bytes([0xFB, 0xEF, 0xBE, 0xFF, 0xFE]) * 20


@pytest.mark.parametrize(
    "spelling",
    [
        PNG_B64,
        base64.urlsafe_b64encode(PNG).decode(),
        PNG_B64.rstrip("="),
        base64.encodebytes(PNG).decode(),  # wrapped at 76 columns, trailing newline
        base64.encodebytes(PNG).decode().replace("\n", "\r\n"),
        "  " + " ".join(PNG_B64[i : i + 10] for i in range(0, len(PNG_B64), 10)) + "\t",
        "data:image/png;base64," + PNG_B64,
        "data:image/jpeg;base64," + PNG_B64,  # the prefix lies; the bytes are still returned as-is
        "data:application/octet-stream;base64," + PNG_B64,
        "data:;base64," + PNG_B64,
        "data:image/png;name=page-1.png;base64," + PNG_B64,
        "DATA:IMAGE/PNG;BASE64," + PNG_B64,
        "  data:image/png;base64," + base64.encodebytes(PNG).decode(),
        "data:image/png;base64," + base64.urlsafe_b64encode(PNG).decode().rstrip("="),
    ],
)
def test_accepted_spellings_decode_to_the_same_bytes(spelling):
    assert decode_base64_image(spelling, index=0) == PNG


def test_decoded_bytes_are_a_real_image_whatever_the_data_uri_said():
    data = decode_base64_image("data:application/octet-stream;base64," + PNG_B64, index=0)
    assert decode_image(data).size == (40, 30)


def test_url_safe_alphabet_with_and_without_padding():
    standard = base64.b64encode(URLSAFE_BYTES).decode()
    urlsafe = base64.urlsafe_b64encode(URLSAFE_BYTES).decode()
    assert "+" in standard and "/" in standard and urlsafe != standard  # the test means something
    for spelling in (standard, urlsafe, urlsafe.rstrip("="), standard.rstrip("=")):
        assert decode_base64_image(spelling, index=0) == URLSAFE_BYTES


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 100, 101, 102])
def test_missing_padding_is_added_for_every_remainder(length):
    data = bytes(range(256))[:length] if length <= 256 else b""
    unpadded = base64.b64encode(data).decode().rstrip("=")
    assert decode_base64_image(unpadded, index=0) == data
    assert decoded_size(unpadded) == length == decoded_size(base64.b64encode(data).decode())


@pytest.mark.parametrize(
    ("value", "index", "fragment"),
    [
        (17, 0, "got int"),
        (None, 1, "got NoneType"),
        (PNG, 2, "got bytes"),
        ([PNG_B64], 3, "got list"),
        ({"data": PNG_B64}, 4, "got dict"),
        ("", 5, "empty string"),
        ("   \n\t ", 6, "empty string"),
        ("hello world!", 7, "unexpected character '!'"),
        ("héllo", 8, "unexpected character 'é'"),
        ("QUJD\x00", 9, "unexpected character '\\x00'"),
        ("data:image/png;base64", 10, "no comma"),
        ("data:image/png,iVBORw0KGgo=", 11, "not base64-encoded"),
        ("data:text/plain;charset=utf-8,hello", 12, "not base64-encoded"),
        ("data:image/png;base64,", 13, "no data after the comma"),
        ("data:image/png;base64,  \n", 14, "no data after the comma"),
        ("data:image/png;base64,not base64!", 15, "unexpected character '!'"),
        ("A", 16, "1 more than a multiple of 4"),
        ("QUJDR", 17, "1 more than a multiple of 4"),
        ("=" * 8, 18, "invalid base64"),
        ("QUJD=QUJD", 19, "invalid base64"),
        ("QQ==QQ==", 20, "invalid base64"),
    ],
)
def test_bad_payloads_name_their_index_and_reason(value, index, fragment):
    with pytest.raises(InvalidInput) as raised:
        decode_base64_image(value, index=index)
    assert raised.value.index == index
    assert fragment in raised.value.message
    assert str(raised.value).startswith(f"input {index}: ")
    assert raised.value.to_dict()["index"] == index


def test_errors_do_not_echo_huge_inputs():
    with pytest.raises(InvalidInput, match="invalid base64") as raised:
        decode_base64_image("QUJD" * 2000 + "!" + "QUJD" * 2000, index=0)
    assert len(raised.value.message) < 160 and "..." in raised.value.message
    with pytest.raises(InvalidInput, match="not base64-encoded") as raised:
        decode_base64_image("data:image/png" + ";x" * 5000 + ",QUJD", index=0)
    assert len(raised.value.message) < 160


def test_size_limit_is_checked_from_the_length_without_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a payload over the limit must not be decoded")

    monkeypatch.setattr(payloads.binascii, "a2b_base64", no_decoding)
    huge = "A" * 10_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as raised:
        decode_base64_image(huge, index=3, max_bytes=1000)
    assert time.perf_counter() - started < 0.5
    assert raised.value.index == 3
    assert "7,500,000 bytes" in raised.value.message
    assert "7,499,000 over the per-image limit of 1,000 bytes" in raised.value.message


@pytest.mark.parametrize(
    "spelling",
    [
        PNG_B64,
        PNG_B64.rstrip("="),
        base64.encodebytes(PNG).decode(),
        "data:image/png;base64," + base64.urlsafe_b64encode(PNG).decode(),
    ],
)
def test_size_limit_is_exact_at_the_boundary(spelling):
    assert decode_base64_image(spelling, index=0, max_bytes=len(PNG)) == PNG
    with pytest.raises(InvalidInput, match=f"{len(PNG):,} bytes, 1 over the per-image limit") as raised:
        decode_base64_image(spelling, index=4, max_bytes=len(PNG) - 1)
    assert raised.value.index == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("data:image/png;base64,AAAA", True),
        ("data:IMAGE/webp;BASE64,AAAA", True),
        ("data:image/jpeg;name=scan.jpg;base64,AAAA", True),
        ("data:image/png;base64," + "A" * 1_000_000, True),
        ("data:text/plain;base64,AAAA", False),
        ("data:application/octet-stream;base64,AAAA", False),
        ("data:image/png,AAAA", False),
        ("data:image/png;base64", False),
        ("what is a data:image/png;base64, uri?", False),
        ("", False),
        (42, False),
        (None, False),
    ],
)
def test_image_data_uri_detection(value, expected):
    assert is_image_data_uri(value) is expected


def test_a_clean_payload_is_decoded_without_copies_of_the_string():
    """Standard, padded, unwrapped base64 (what clients send) is decoded from the string itself; one
    over 4 MB in slices (so the GIL is let go between them), costing one more copy of the output."""
    import tracemalloc

    for size, most in ((2_000_000, 1.2), (10_000_000, 2.3)):  # the old decoder: 3.7 x the output
        data = bytes(range(250)) * (size // 250)
        text = base64.b64encode(data).decode()
        tracemalloc.start()
        try:
            assert decode_base64_image(text, index=0) == data
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < most * len(data), f"{peak:,} bytes traced for {len(data):,} bytes of output"


def test_large_payloads_decode_in_slices_with_the_same_errors():
    data = bytes(range(256)) * 40_000
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text, index=0) == data
    assert decode_base64_image(base64.urlsafe_b64encode(data).decode().rstrip("="), index=0) == data
    broken = text[:5_000_000] + "!" + text[5_000_001:]
    with pytest.raises(InvalidInput, match="unexpected character '!'") as raised:
        decode_base64_image(broken, index=4)
    assert raised.value.index == 4
