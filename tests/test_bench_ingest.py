"""`pagelens bench ingest` on the tiny architecture: what it writes, not how fast."""

from __future__ import annotations

from typer.testing import CliRunner

from pagelens.cli import app
from tests.bench_checks import assert_published, doc_copy


def test_bench_ingest_times_a_pdf_end_to_end_against_the_engine_alone(tmp_path):
    docs, out = doc_copy(tmp_path), tmp_path / "ingest.json"
    archs = ["--arch", "tiny-colqwen2.5", "--arch", "tiny-colmodernvbert"]
    options = [*archs, "--pages", "4", "--rounds", "2", "--out", str(out), "--docs", str(docs)]
    result = CliRunner().invoke(app, ["bench", "ingest", *options])
    assert result.exit_code == 0, result.output
    written = assert_published("ingest", out, docs, table_rows=2)
    rows = written["tables"]["main"]
    for arch, row in zip(("tiny-colqwen2.5", "tiny-colmodernvbert"), rows, strict=True):
        assert row["architecture"].startswith(arch) and len(row["rounds (s), ingest"].split()) == 2
        assert row["engine alone pages/s"] > 0 and row["ingest pages/s"] > 0
        assert row["ingest / engine"] == row["ingest pages/s"] / row["engine alone pages/s"]
        assert written["figures"][f"{arch}_ratio"] == row["ingest / engine"]
    assert "4-page PDF" in written["description"]
