"""Encoding embeddings for responses: NumPy .npz (morphik-core), nested JSON lists, and base64
buffers that keep their shape and dtype (OpenAI-style). Arrays are `(n_tokens, dim)` (multi-vector)
or `(dim,)` (single-vector), float32 or float16.

Decoders and the JSON encoder raise `InvalidInput` (a 400 naming the field, and `index` when the
caller gives it): the data in hand cannot be read or carried. The binary encoders raise ValueError
for arrays no engine produces (object or integer dtypes), a server bug and so a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import zipfile

import numpy as np

from pagelens.errors import InvalidInput

NPZ_MEDIA = "application/x-npz"
JSON_MEDIA = "application/json"
_NPZ_ALIASES = frozenset({NPZ_MEDIA, "application/octet-stream"})  # media types that ask for the binary body
_WIRE_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


# --- npz ---------------------------------------------------------------------------------------------


def encode_npz(arrays: list[np.ndarray], *, input_type: str) -> bytes:
    """An uncompressed .npz: `count` (0-d int64), `input_type` (0-d unicode) and `emb_0..emb_{count-1}`,
    each in its own dtype. Loads with `np.load(io.BytesIO(body), allow_pickle=False)`."""
    named: dict[str, np.ndarray] = {}
    for position, array in enumerate(arrays):
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"embedding {position} has object dtype; npz bodies must load without pickle")
        named[f"emb_{position}"] = array
    buffer = io.BytesIO()
    # No allow_pickle=False here: savez only accepts it from numpy 2.1 (pyproject allows 2.0), and the
    # object-dtype check above already guarantees nothing is pickled.
    np.savez(
        buffer,
        count=np.array(len(named), dtype=np.int64),
        input_type=np.array(str(input_type), dtype=np.str_),
        **named,
    )
    return buffer.getvalue()


def decode_npz(body: bytes) -> tuple[str, list[np.ndarray]]:
    """`(input_type, arrays)` from an `encode_npz` body, arrays in `emb_i` order.

    InvalidInput if the body is no npz, lacks `count`/`input_type`, or `count` disagrees with the `emb_*` keys.
    """
    try:
        archive = np.load(io.BytesIO(body), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InvalidInput(f"body is not a readable npz archive: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidInput("body is a single .npy array, not an npz archive")
    with archive as data:
        missing = {"count", "input_type"} - set(data.files)
        if missing:
            raise InvalidInput(f"npz body lacks {', '.join(sorted(missing))}")
        count_field, type_field = data["count"], data["input_type"]
        if count_field.shape != () or count_field.dtype.kind not in "iu":
            raise InvalidInput(f"npz 'count' must be a 0-d integer, got shape {count_field.shape} {count_field.dtype}")
        count = int(count_field)
        names = {name for name in data.files if name.startswith("emb_")}
        expected = [f"emb_{i}" for i in range(max(count, 0))]
        if count < 0 or names != set(expected):
            raise InvalidInput(f"npz says count={count} but holds {len(names)} embeddings ({', '.join(sorted(names))})")
        return str(type_field), [data[name] for name in expected]


# --- JSON and base64 -----------------------------------------------------------------------------------


def to_nested_lists(array: np.ndarray, *, index: int | None = None) -> list:
    """Nested Python float lists for JSON (values as float32).

    InvalidInput (naming input `index`) on NaN or infinity, which JSON cannot carry but npz and base64 can.
    """
    as_float32 = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(as_float32)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise InvalidInput(
            f"embedding has {bad} non-finite value(s) (NaN or infinity), which JSON cannot carry; "
            "ask for npz or base64",
            index=index,
        )
    return as_float32.tolist()


def _wire_dtype_name(dtype: np.dtype) -> str | None:
    if dtype.kind == "f" and dtype.itemsize == 4:
        return "float32"
    if dtype.kind == "f" and dtype.itemsize == 2:
        return "float16"
    return None


def encode_base64_array(array: np.ndarray) -> dict:
    """`{"data": base64 of the little-endian C-order buffer, "shape": [...], "dtype": "float32"|"float16"}`.

    Any byte order is accepted; the wire is always `<f4` / `<f2`. ValueError for other dtypes.
    """
    array = np.asarray(array)
    name = _wire_dtype_name(array.dtype)
    if name is None:
        raise ValueError(f"cannot encode dtype {array.dtype}; expected float32 or float16")
    raw = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[name]).tobytes()
    return {"data": base64.b64encode(raw).decode("ascii"), "shape": list(array.shape), "dtype": name}


def decode_base64_array(item: dict, *, index: int | None = None) -> np.ndarray:
    """The native-order array of an `encode_base64_array` item, shape `item["shape"]`, dtype float32 or float16.

    InvalidInput (naming the field, and input `index`) when a field is missing, the dtype is not
    float32/float16, or the bytes do not fit shape x itemsize.
    """
    if not isinstance(item, dict) or not {"data", "shape", "dtype"} <= item.keys():
        raise InvalidInput("expected a dict with 'data', 'shape' and 'dtype'", index=index)
    name = item["dtype"]
    if name not in _WIRE_DTYPES:
        raise InvalidInput(f"unsupported dtype {name!r}; expected 'float32' or 'float16'", index=index)
    shape_field = item["shape"]
    if not isinstance(shape_field, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape_field
    ):
        raise InvalidInput(f"'shape' must be a list of non-negative integers, got {shape_field!r}", index=index)
    shape = tuple(shape_field)
    try:
        raw = base64.b64decode(item["data"], validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise InvalidInput(f"'data' is not valid base64: {error}", index=index) from None
    itemsize = _WIRE_DTYPES[name].itemsize
    expected = math.prod(shape) * itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"'data' has {len(raw)} bytes, which cannot hold shape {list(shape)} of {name} "
            f"(expected {math.prod(shape)} x {itemsize} = {expected} bytes)",
            index=index,
        )
    return np.frombuffer(raw, dtype=_WIRE_DTYPES[name]).reshape(shape).astype(name)


# --- content negotiation -------------------------------------------------------------------------------


def _parse_accept(accept_header: str) -> list[tuple[str, float]]:
    """`(media range, q)` pairs of an Accept header, lower-cased; malformed entries are skipped."""
    ranges: list[tuple[str, float]] = []
    for entry in accept_header.split(","):
        media, *params = (piece.strip() for piece in entry.split(";"))
        media = media.lower()
        if media == "*":  # some old clients (Java's URLConnection) send a bare '*'
            media = "*/*"
        kind, slash, subtype = media.partition("/")
        if not slash or not kind or not subtype:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = math.nan
                break  # parameters after q are accept-extensions
        if not 0.0 <= quality <= 1.0:  # also rejects NaN
            continue
        ranges.append((media, quality))
    return ranges


def _preference(ranges: list[tuple[str, float]], media_types: frozenset[str]) -> tuple[float, int]:
    """`(q, specificity)` of the most specific range matching any of `media_types` (2 exact, 1 `type/*`, 0 `*/*`).

    Returns `(0.0, -1)` when nothing matches.
    """
    kinds = {media.split("/", 1)[0] for media in media_types}
    best_specificity, best_quality = -1, 0.0
    for media, quality in ranges:
        if media in media_types:
            specificity = 2
        elif media.endswith("/*") and media[:-2] in kinds:
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity or (specificity == best_specificity and quality > best_quality):
            best_specificity, best_quality = specificity, quality
    return best_quality, best_specificity


def wants_json(accept_header: str | None) -> bool:
    """True when the Accept header prefers application/json to npz: a higher q, or the same q from a
    more specific range (`application/json, */*`). A missing header, `*/*`, `application/x-npz` or
    `application/octet-stream` means npz, and so does any tie."""
    if not accept_header:
        return False
    ranges = _parse_accept(accept_header)
    json_quality, json_specificity = _preference(ranges, frozenset({JSON_MEDIA}))
    npz_quality, npz_specificity = _preference(ranges, _NPZ_ALIASES)
    return json_quality > 0 and (json_quality, json_specificity) > (npz_quality, npz_specificity)
