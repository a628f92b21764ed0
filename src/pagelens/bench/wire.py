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

from pagelens.bench.report import DEFAULT_DOCS, Report
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


def run(
    *,
    pages: int = 16,
    tokens: int = 755,
    repeats: int = 3,
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    """Measure every encoding; print a table with ratios against seed 001's JSON lists, write the JSON
    and the docs section."""
    report = Report("wire", args if args is not None else {"pages": pages, "tokens": tokens, "repeats": repeats})
    report.describe(
        f"{pages} pages of ({tokens}, 128) float32 unit vectors (a ColQwen2.5 letter page has ~755), "
        f"arrays -> body bytes -> float32 arrays, as the server and a client do; best of {repeats}."
    )
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
    for name, row in rows.items():
        row["times_smaller"] = base["bytes_per_page"] / row["bytes_per_page"]
        row["times_faster"] = base["ms_per_page"] / row["ms_per_page"]
        report.add_row(
            {
                "encoding": name,
                "KB/page": row["bytes_per_page"] / 1024,
                "encode+decode ms/page": row["ms_per_page"],
                "x smaller": row["times_smaller"],
                "x faster": row["times_faster"],
                "max abs error": row["max_error"],
            }
        )
    report.figures.update(pages=pages, tokens=tokens, rows=rows)
    f16 = rows["npz float16"]
    report.note(
        f"npz float16 is {f16['times_smaller']:.1f}x smaller and {f16['times_faster']:.0f}x faster to encode + "
        f"decode than seed 001's JSON lists (bar, issue #4: >= 4x and >= 10x)."
    )
    return report.finish(json_path, docs_path)
