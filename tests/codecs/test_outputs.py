"""Output encodings: npz as morphik-core parses it, JSON lists, base64 buffers with shape and dtype."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from pagelens.codecs.outputs import (
    decode_base64_array,
    decode_npz,
    encode_base64_array,
    encode_npz,
    to_nested_lists,
    wants_json,
)

rng = np.random.default_rng(0)
ARRAYS = [
    rng.standard_normal((7, 128)).astype(np.float32),
    rng.standard_normal((3, 128)).astype(np.float16),
    rng.standard_normal(2560).astype(np.float32),
]


def test_npz_parses_as_morphik_core_does_and_round_trips():
    body = encode_npz(ARRAYS, input_type="image")
    data = np.load(io.BytesIO(body), allow_pickle=False)
    assert int(data["count"]) == 3 and str(data["input_type"]) == "image"
    for i, array in enumerate(ARRAYS):
        np.testing.assert_array_equal(data[f"emb_{i}"], array)
        assert data[f"emb_{i}"].dtype == array.dtype
    input_type, decoded = decode_npz(body)
    assert input_type == "image" and len(decoded) == 3
    assert decode_npz(encode_npz([], input_type="text")) == ("text", [])


def test_npz_with_a_wrong_count_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, count=np.array(2), input_type=np.array("text"), emb_0=ARRAYS[0])
    with pytest.raises(ValueError, match="count=2"):
        decode_npz(buffer.getvalue())


@pytest.mark.parametrize("array", ARRAYS, ids=["multi-f32", "multi-f16", "single-f32"])
def test_base64_keeps_shape_and_dtype_little_endian(array):
    item = encode_base64_array(array)
    assert item["shape"] == list(array.shape) and item["dtype"] == str(array.dtype)
    raw = base64.b64decode(item["data"])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=array.dtype.newbyteorder("<")).reshape(array.shape), array)
    np.testing.assert_array_equal(decode_base64_array(item), array)


def test_base64_decoding_checks_length_and_dtype():
    item = encode_base64_array(ARRAYS[0])
    with pytest.raises(ValueError, match="cannot hold"):
        decode_base64_array({**item, "shape": [8, 128]})
    with pytest.raises(ValueError, match="unsupported dtype"):
        decode_base64_array({**item, "dtype": "int8"})
    with pytest.raises(ValueError):
        encode_base64_array(ARRAYS[0].astype(np.float64))


def test_json_lists_are_float_and_refuse_non_finite_values():
    nested = to_nested_lists(ARRAYS[1])
    assert isinstance(nested[0][0], float) and len(nested) == 3 and len(nested[0]) == 128
    with pytest.raises(ValueError, match="non-finite"):
        to_nested_lists(np.array([[1.0, np.nan]], dtype=np.float32))


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/x-npz", False),
        ("application/octet-stream", False),
        ("application/json", True),
        ("application/json, */*;q=0.1", True),
        ("*/*, application/json;q=0.5", False),
        ("application/x-npz;q=1, application/json;q=0.9", False),
        ("text/html, application/json;q=0.9, */*;q=0.8", True),
    ],
)
def test_accept_header_negotiation(accept, json):
    assert wants_json(accept) is json
