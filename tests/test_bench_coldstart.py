"""`pagelens bench coldstart` on the tiny checkpoint: both process kinds, the mmap check, the JSON and docs."""

from __future__ import annotations

from typer.testing import CliRunner

from pagelens.cli import app
from tests.bench_checks import assert_published, doc_copy


def test_coldstart_measures_both_processes_and_the_mmap_check(tmp_path):
    docs, out = doc_copy(tmp_path), tmp_path / "coldstart.json"
    args = ["bench", "coldstart", "--repeats", "1", "--mmap-arch", "tiny-colmodernvbert"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    written = assert_published("coldstart", out, docs, table_rows=3 + 6)
    figures = written["figures"]
    assert figures["floor_s"] > 0 and figures["served_s"] > 0
    assert figures["ratio"] == figures["served_s"] / figures["floor_s"]
    mmap = figures["mmap"]
    assert mmap["checkpoint_bytes"] > 0 and mmap["load_s"] > 0 and mmap["safetensors_mappings"] >= 1
    assert 0 <= mmap["mmapped_fraction"] <= 1
    assert mmap["weight_bytes_in_file_mappings"] <= mmap["weight_bytes"]
