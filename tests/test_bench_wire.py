"""`pagelens bench wire` measures every encoding and each one round-trips the vectors."""

from __future__ import annotations

import json

from pagelens.bench.wire import BASELINE, ENCODINGS, run


def test_wire_bench_round_trips_every_encoding(tmp_path):
    figures = run(pages=3, tokens=40, repeats=1, out=tmp_path / "wire.json")
    assert set(figures["rows"]) == set(ENCODINGS)
    for name, row in figures["rows"].items():
        assert row["bytes_per_page"] > 0 and row["ms_per_page"] > 0
        assert row["max_error"] <= (1e-3 if "float16" in name else 0.0), name
    assert figures["rows"]["npz float16"]["bytes_per_page"] * 4 < figures["rows"][BASELINE]["bytes_per_page"]
    assert json.loads((tmp_path / "wire.json").read_text())["tokens"] == 40
