"""`pagelens bench wire` measures every encoding, each one round-trips the vectors, and it publishes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pagelens.bench.wire import BASELINE, ENCODINGS, run
from pagelens.cli import app
from tests.bench_checks import assert_published, doc_copy


def test_wire_bench_round_trips_every_encoding(tmp_path):
    figures = run(pages=3, tokens=40, repeats=1, json_path=tmp_path / "wire.json", docs_path=None)["figures"]
    assert set(figures["rows"]) == set(ENCODINGS)
    for name, row in figures["rows"].items():
        assert row["bytes_per_page"] > 0 and row["ms_per_page"] > 0
        assert row["max_error"] <= (1e-3 if "float16" in name else 0.0), name
    assert figures["rows"]["npz float16"]["bytes_per_page"] * 4 < figures["rows"][BASELINE]["bytes_per_page"]
    assert json.loads((tmp_path / "wire.json").read_text())["figures"]["tokens"] == 40


def test_wire_command_writes_json_and_its_docs_section(tmp_path):
    docs, out = doc_copy(tmp_path), tmp_path / "wire.json"
    args = ["bench", "wire", "--pages", "2", "--tokens", "30", "--repeats", "1", "--out", str(out), "--docs", str(docs)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = assert_published("wire", out, docs, table_rows=len(ENCODINGS))
    assert written["command"] == "pagelens bench wire --pages 2 --tokens 30 --repeats 1"
    assert [row["encoding"] for row in written["tables"]["main"]] == list(ENCODINGS)
