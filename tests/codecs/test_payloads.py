"""Base64 / data-URI payload decoding: accepted spellings, and bad ones named by index."""

from __future__ import annotations

import base64
import time

import pytest

from pagelens.codecs.payloads import decode_base64_image, is_image_data_uri
from pagelens.errors import InvalidInput
from tests.conftest import encode, make_page

PNG = encode(make_page(40, 30))


@pytest.mark.parametrize(
    "spelling",
    [
        base64.b64encode(PNG).decode(),
        base64.urlsafe_b64encode(PNG).decode(),
        base64.b64encode(PNG).decode().rstrip("="),
        "\n".join(base64.encodebytes(PNG).decode().splitlines()),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "data:application/octet-stream;base64," + base64.b64encode(PNG).decode(),
        "DATA:IMAGE/JPEG;BASE64," + base64.b64encode(PNG).decode(),
    ],
)
def test_accepted_spellings_decode_to_the_same_bytes(spelling):
    assert decode_base64_image(spelling, index=0) == PNG


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (17, "got int"),
        (None, "got NoneType"),
        ("", "empty"),
        ("   \n ", "empty"),
        ("hello world!", "invalid base64"),
        ("data:image/png;base64", "no comma"),
        ("data:image/png,iVBORw0KGgo=", "not base64-encoded"),
        ("=" * 8, "invalid base64"),
    ],
)
def test_bad_payloads_name_their_index(value, fragment):
    with pytest.raises(InvalidInput) as raised:
        decode_base64_image(value, index=7)
    assert raised.value.index == 7 and fragment in raised.value.message


def test_size_limit_is_checked_before_decoding_and_errors_do_not_echo_huge_inputs():
    huge = "A" * 10_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="over the per-image limit") as raised:
        decode_base64_image(huge, index=2, max_bytes=1000)
    assert time.perf_counter() - started < 0.5 and raised.value.index == 2
    with pytest.raises(InvalidInput) as raised:
        decode_base64_image("!" * 5000, index=0)
    assert len(raised.value.message) < 200


def test_image_data_uri_detection():
    assert is_image_data_uri("data:image/png;base64,AAAA")
    assert is_image_data_uri("data:IMAGE/webp;BASE64,AAAA")
    assert not is_image_data_uri("data:text/plain;base64,AAAA")
    assert not is_image_data_uri("what is a data:image/png;base64, uri?")
    assert not is_image_data_uri(42)
