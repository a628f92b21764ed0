"""Output encodings: npz as morphik-core parses it, JSON lists, base64 buffers with shape and dtype, Accept."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import numpy as np
import pytest

from pagelens.codecs.outputs import (
    JSON_MEDIA,
    NPZ_MEDIA,
    decode_base64_array,
    decode_npz,
    encode_base64_array,
    encode_npz,
    to_nested_lists,
    wants_json,
)
from pagelens.errors import InvalidInput

rng = np.random.default_rng(0)
ARRAYS = [
    rng.standard_normal((7, 128)).astype(np.float32),
    rng.standard_normal((3, 128)).astype(np.float16),
    rng.standard_normal(2560).astype(np.float32),
    rng.standard_normal(128).astype(np.float16),
]
IDS = ["multi-f32", "multi-f16", "single-f32", "single-f16"]


def morphik_parse(body: bytes) -> list[np.ndarray]:
    """Exactly what morphik-core's ColpaliApiEmbeddingModel does with the response body."""
    data = np.load(io.BytesIO(body), allow_pickle=False)
    count = int(data["count"])
    return [data[f"emb_{i}"] for i in range(count)]


def npz_body(**fields) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **fields)
    return buffer.getvalue()


def test_media_constants():
    assert NPZ_MEDIA == "application/x-npz" and JSON_MEDIA == "application/json"


@pytest.mark.parametrize("input_type", ["image", "text"])
def test_npz_parses_as_morphik_core_does_and_round_trips(input_type):
    body = encode_npz(ARRAYS, input_type=input_type)
    parsed = morphik_parse(body)
    assert len(parsed) == len(ARRAYS)
    for got, array in zip(parsed, ARRAYS, strict=True):
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)
    decoded_type, decoded = decode_npz(body)
    assert decoded_type == input_type
    for got, array in zip(decoded, ARRAYS, strict=True):
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


def test_npz_fields_are_plain_arrays_and_uncompressed():
    body = encode_npz(ARRAYS[:2], input_type="image")
    data = np.load(io.BytesIO(body), allow_pickle=False)
    assert data["count"].shape == () and data["count"].dtype == np.int64
    assert data["input_type"].shape == () and data["input_type"].dtype.kind == "U"
    assert sorted(data.files) == ["count", "emb_0", "emb_1", "input_type"]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_npz_with_count_zero():
    body = encode_npz([], input_type="text")
    assert morphik_parse(body) == []
    assert decode_npz(body) == ("text", [])


def test_npz_keeps_values_of_non_contiguous_and_big_endian_arrays():
    base = rng.standard_normal((128, 10)).astype(np.float32)
    odd = [base.T, base[::2], base.astype(">f4")]
    _, decoded = decode_npz(encode_npz(odd, input_type="image"))
    for got, array in zip(decoded, odd, strict=True):
        np.testing.assert_array_equal(got, array)


def test_npz_refuses_object_arrays():
    with pytest.raises(ValueError, match="object dtype"):
        encode_npz([np.array([1.0, None], dtype=object)], input_type="image")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (npz_body(count=np.array(2), input_type=np.array("text"), emb_0=ARRAYS[0]), "count=2"),
        (npz_body(count=np.array(1), input_type=np.array("text"), emb_0=ARRAYS[0], emb_1=ARRAYS[1]), "count=1"),
        (npz_body(count=np.array(1), input_type=np.array("text"), emb_1=ARRAYS[0]), "count=1"),
        (npz_body(count=np.array(1), input_type=np.array("text"), emb_x=ARRAYS[0]), "count=1"),
        (npz_body(count=np.array(-1), input_type=np.array("text")), "count=-1"),
        (npz_body(count=np.array([1]), input_type=np.array("text"), emb_0=ARRAYS[0]), "0-d integer"),
        (npz_body(count=np.array(1.0), input_type=np.array("text"), emb_0=ARRAYS[0]), "0-d integer"),
        (npz_body(input_type=np.array("text"), emb_0=ARRAYS[0]), "lacks count"),
        (npz_body(count=np.array(1), emb_0=ARRAYS[0]), "lacks input_type"),
        (b"", "not a readable npz"),
        (b"not an npz at all", "not a readable npz"),
        (encode_npz(ARRAYS[:1], input_type="image")[:100], "not a readable npz"),
    ],
)
def test_decode_npz_refuses_inconsistent_or_foreign_bodies(body, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        decode_npz(body)


def test_decode_npz_refuses_a_single_npy_body():
    buffer = io.BytesIO()
    np.save(buffer, ARRAYS[0])
    with pytest.raises(InvalidInput, match="not an npz archive"):
        decode_npz(buffer.getvalue())


@pytest.mark.parametrize("array", ARRAYS, ids=IDS)
def test_base64_keeps_shape_and_dtype_little_endian(array):
    item = encode_base64_array(array)
    assert item["shape"] == list(array.shape) and item["dtype"] == str(array.dtype)
    assert json.loads(json.dumps(item)) == item
    raw = base64.b64decode(item["data"], validate=True)
    little = np.dtype("<f4") if array.dtype == np.float32 else np.dtype("<f2")
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=little).reshape(array.shape), array)
    decoded = decode_base64_array(item)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape and decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("array", ARRAYS, ids=IDS)
def test_base64_of_big_endian_or_strided_input_is_still_little_endian_c_order(array):
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    assert encode_base64_array(big_endian) == encode_base64_array(array)
    if array.ndim == 2:
        transposed = np.asfortranarray(array)
        assert encode_base64_array(transposed) == encode_base64_array(array)


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.uint8, np.int32, np.bool_])
def test_base64_encoding_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match="float32 or float16"):
        encode_base64_array(np.zeros((2, 128), dtype=dtype))


GOOD_ITEM = encode_base64_array(ARRAYS[0])  # shape [7, 128], float32


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({**GOOD_ITEM, "shape": [8, 128]}, "cannot hold shape \\[8, 128\\]"),
        ({**GOOD_ITEM, "shape": [7, 64]}, "cannot hold"),
        ({**GOOD_ITEM, "dtype": "float16"}, "cannot hold"),
        ({**GOOD_ITEM, "data": GOOD_ITEM["data"][:-8]}, "cannot hold"),
        ({**GOOD_ITEM, "dtype": "int8"}, "unsupported dtype 'int8'"),
        ({**GOOD_ITEM, "dtype": "bfloat16"}, "unsupported dtype"),
        ({**GOOD_ITEM, "dtype": "float64"}, "unsupported dtype"),
        ({**GOOD_ITEM, "dtype": None}, "unsupported dtype"),
        ({**GOOD_ITEM, "shape": [-7, -128]}, "non-negative integers"),
        ({**GOOD_ITEM, "shape": [7.0, 128]}, "non-negative integers"),
        ({**GOOD_ITEM, "shape": "7x128"}, "non-negative integers"),
        ({**GOOD_ITEM, "data": "not base64!"}, "not valid base64"),
        ({**GOOD_ITEM, "data": 12345}, "not valid base64"),
        ({"data": GOOD_ITEM["data"], "shape": [7, 128]}, "'dtype'"),
        ([GOOD_ITEM["data"]], "expected a dict"),
    ],
)
def test_base64_decoding_checks_fields_length_and_dtype(item, fragment):
    with pytest.raises(InvalidInput, match=fragment) as raised:
        decode_base64_array(item)
    assert raised.value.index is None
    with pytest.raises(InvalidInput, match=fragment) as raised:
        decode_base64_array(item, index=4)
    assert raised.value.index == 4 and raised.value.http_status == 400


@pytest.mark.parametrize("array", ARRAYS, ids=IDS)
def test_json_lists_are_python_floats_with_the_same_shape_and_values(array):
    nested = to_nested_lists(array)
    assert np.asarray(nested).shape == array.shape
    first = nested[0][0] if array.ndim == 2 else nested[0]
    assert type(first) is float
    np.testing.assert_array_equal(np.asarray(nested, dtype=np.float32), array.astype(np.float32))
    json.dumps(nested, allow_nan=False)


def test_json_lists_are_fast_for_big_multi_vector_arrays():
    big = rng.standard_normal((800, 128)).astype(np.float16)
    started = time.perf_counter()
    for _ in range(5):
        to_nested_lists(big)
    assert (time.perf_counter() - started) / 5 < 0.05


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_json_lists_refuse_non_finite_values(bad, dtype):
    array = np.ones((3, 128), dtype=dtype)
    array[1, 5] = bad
    with pytest.raises(InvalidInput, match=r"non-finite.*npz or base64") as raised:
        to_nested_lists(array)
    assert raised.value.index is None
    with pytest.raises(InvalidInput) as raised:
        to_nested_lists(array, index=2)
    assert raised.value.index == 2 and raised.value.http_status == 400


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("*", False),
        ("application/*", False),
        ("application/x-npz", False),
        ("application/octet-stream", False),
        ("text/plain", False),
        ("application/json", True),
        ("Application/JSON", True),
        ("application/json; charset=utf-8", True),
        ("application/json, */*;q=0.1", True),
        ("application/json, */*", True),  # same q, json named explicitly (axios sends this)
        ("application/json, text/plain, */*", True),
        ("text/html, application/json;q=0.9, */*;q=0.8", True),
        ("application/*;q=0.5, application/json", True),
        ("application/x-npz;q=0.1, application/json", True),
        ("*/*, application/json;q=0.5", False),
        ("application/x-npz;q=1, application/json;q=0.9", False),
        ("application/json, application/x-npz", False),  # a tie goes to npz
        ("application/json, application/octet-stream", False),
        ("application/json;q=0", False),
        ("application/json;q=0, */*", False),
        ("application/json;q=abc", False),
        ("application/json;q=2", False),
        ("application/json ; q=0.8 , application/x-npz ; q=0.7", True),
        ("garbage, ,;;, application/json", True),
    ],
)
def test_accept_header_negotiation(accept, json_wanted):
    assert wants_json(accept) is json_wanted
