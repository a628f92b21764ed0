"""Encoding embeddings for responses: NumPy .npz (morphik-core), nested JSON lists, and base64
buffers that keep their shape and dtype (OpenAI-style). Arrays are `(n_tokens, dim)` or `(dim,)`,
float32 or float16."""

from __future__ import annotations

import base64
import io

import numpy as np

NPZ_MEDIA = "application/x-npz"
JSON_MEDIA = "application/json"
_WIRE_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def encode_npz(arrays: list[np.ndarray], *, input_type: str) -> bytes:
    """An uncompressed .npz with `count`, `input_type` and `emb_0..emb_{count-1}` (each its own dtype);
    loads with `np.load(io.BytesIO(body), allow_pickle=False)`."""
    buffer = io.BytesIO()
    named = {f"emb_{i}": np.ascontiguousarray(array) for i, array in enumerate(arrays)}
    np.savez(buffer, count=np.array(len(arrays), dtype=np.int64), input_type=np.array(input_type), **named)
    return buffer.getvalue()


def decode_npz(body: bytes) -> tuple[str, list[np.ndarray]]:
    """`(input_type, arrays)` from an `encode_npz` body; ValueError if `count` disagrees with the arrays."""
    with np.load(io.BytesIO(body), allow_pickle=False) as data:
        count = int(data["count"])
        names = sorted((name for name in data.files if name.startswith("emb_")), key=lambda n: int(n[4:]))
        if names != [f"emb_{i}" for i in range(count)]:
            raise ValueError(f"npz says count={count} but holds {len(names)} embeddings")
        return str(data["input_type"]), [data[name] for name in names]


def to_nested_lists(array: np.ndarray) -> list:
    """Python float lists for JSON (float32 values); ValueError on NaN or infinity."""
    as_float = np.asarray(array, dtype=np.float32)
    if not np.isfinite(as_float).all():
        raise ValueError("embedding has non-finite values")
    return as_float.tolist()


def encode_base64_array(array: np.ndarray) -> dict:
    """`{"data": base64 of the little-endian C-order buffer, "shape": [...], "dtype": "float32"|"float16"}`."""
    name = str(array.dtype)
    if name not in _WIRE_DTYPES:
        raise ValueError(f"cannot encode dtype {name}; use float32 or float16")
    raw = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[name]).tobytes()
    return {"data": base64.b64encode(raw).decode("ascii"), "shape": list(array.shape), "dtype": name}


def decode_base64_array(item: dict) -> np.ndarray:
    """The array of an `encode_base64_array` item; ValueError when the bytes do not fit shape x dtype."""
    name = item.get("dtype")
    if name not in _WIRE_DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected float32 or float16")
    shape = tuple(int(n) for n in item["shape"])
    raw = base64.b64decode(item["data"], validate=True)
    expected = int(np.prod(shape)) * _WIRE_DTYPES[name].itemsize
    if len(raw) != expected:
        raise ValueError(f"{len(raw)} bytes cannot hold shape {shape} of {name} ({expected} bytes)")
    return np.frombuffer(raw, dtype=_WIRE_DTYPES[name]).reshape(shape).astype(name)


def _media_preferences(accept: str) -> dict[str, float]:
    preferences: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        preferences[media.lower()] = max(quality, preferences.get(media.lower(), 0.0))
    return preferences


def wants_json(accept: str | None) -> bool:
    """True when the Accept header prefers application/json to npz (a missing header or */* means npz)."""
    if not accept:
        return False
    preferences = _media_preferences(accept)
    json_quality = preferences.get(JSON_MEDIA, 0.0)
    binary_quality = max(
        preferences.get(NPZ_MEDIA, 0.0), preferences.get("application/octet-stream", 0.0),
        preferences.get("*/*", 0.0), preferences.get("application/*", 0.0),
    )  # fmt: skip
    return json_quality > 0 and json_quality >= binary_quality and json_quality > preferences.get(NPZ_MEDIA, 0.0)
