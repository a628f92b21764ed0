"""`pagelens bench wire`: bytes and encode + decode time per page for each response encoding.

One page is a ColQwen2.5-sized multi-vector, `(tokens, 128)` unit rows. Each encoding is timed
from arrays to body bytes and back to float32 arrays, as the server and a client would do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pagelens.codecs.outputs import decode_base64_array, decode_npz, encode_base64_array, encode_npz


def _pages(count: int, tokens: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(count):
        page = rng.standard_normal((tokens, 128)).astype(np.float32)
        pages.append(page / np.linalg.norm(page, axis=1, keepdims=True))
    return pages


def _npz(dtype: str) -> tuple[Callable, Callable]:
    def encode(pages):
        return encode_npz([p.astype(dtype) for p in pages], input_type="image")

    def decode(body):
        return [a.astype(np.float32) for a in decode_npz(body)[1]]

    return encode, decode


def _base64_items(pages):
    return orjson.dumps({"data": [encode_base64_array(p) for p in pages]})


def _base64_decode(body):
    return [decode_base64_array(item).astype(np.float32) for item in orjson.loads(body)["data"]]


ENCODINGS: dict[str, tuple[Callable, Callable]] = {
    "npz float16": _npz("float16"),
    "npz float32": _npz("float32"),
    "base64 + shape (float32)": (_base64_items, _base64_decode),
    "JSON lists (orjson)": (
        lambda pages: orjson.dumps({"embeddings": [p.tolist() for p in pages]}),
        lambda body: [np.asarray(e, dtype=np.float32) for e in orjson.loads(body)["embeddings"]],
    ),
    "JSON lists (json, seed 001)": (
        lambda pages: json.dumps({"embeddings": [p.tolist() for p in pages]}).encode(),
        lambda body: [np.asarray(e, dtype=np.float32) for e in json.loads(body)["embeddings"]],
    ),
}
BASELINE = "JSON lists (json, seed 001)"


def run(*, pages: int = 16, tokens: int = 755, repeats: int = 3, out: Path | None = None) -> dict[str, Any]:
    """Measure every encoding; print a table with ratios against seed 001's JSON lists."""
    data = _pages(pages, tokens)
    rows: dict[str, dict[str, float]] = {}
    for name, (encode, decode) in ENCODINGS.items():
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            body = encode(data)
            decoded = decode(body)
            best = min(best, time.perf_counter() - started)
        worst_error = max(float(np.abs(a - b).max()) for a, b in zip(decoded, data, strict=True))
        rows[name] = {"bytes_per_page": len(body) / pages, "ms_per_page": best * 1000 / pages, "max_error": worst_error}
    base = rows[BASELINE]
    print(f"{pages} pages of ({tokens}, 128); encode + decode, best of {repeats}")
    print(f"{'encoding':30} {'KB/page':>9} {'ms/page':>9} {'x smaller':>10} {'x faster':>9} {'max error':>10}")
    for name, row in rows.items():
        row["times_smaller"] = base["bytes_per_page"] / row["bytes_per_page"]
        row["times_faster"] = base["ms_per_page"] / row["ms_per_page"]
        print(
            f"{name:30} {row['bytes_per_page'] / 1024:9.1f} {row['ms_per_page']:9.2f} "
            f"{row['times_smaller']:10.1f} {row['times_faster']:9.1f} {row['max_error']:10.1e}"
        )
    figures = {"pages": pages, "tokens": tokens, "rows": rows}
    if out is not None:
        out.write_text(json.dumps(figures, indent=2))
    return figures
