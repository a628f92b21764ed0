"""`pagelens bench ask` on the tiny architecture, a tiny run: what it writes, not how fast."""

from __future__ import annotations

from typer.testing import CliRunner

from pagelens.cli import app
from tests.bench_checks import assert_published, doc_copy


def test_bench_ask_times_every_stage_per_k_and_the_cached_answer(tmp_path):
    docs, out = doc_copy(tmp_path), tmp_path / "ask.json"
    options = ["--pages", "3", "--asks", "3", "--k", "1", "--k", "3", "--tokens", "5", "--token-rate", "200",
               "--first-token-ms", "20", "--out", str(out), "--docs", str(docs)]  # fmt: skip
    result = CliRunner().invoke(app, ["bench", "ask", *options])
    assert result.exit_code == 0, result.output
    written = assert_published("ask", out, docs, table_rows=3)
    rows = written["tables"]["main"]
    assert [row["k"] for row in rows] == [1, 3] and all(row["asks"] == 3 for row in rows)
    expected_generation = 20 + 1000 * 4 / 200  # the stand-in's first-token delay + 4 more tokens at 200/s
    for row in rows:
        assert row["generate p50 ms"] >= expected_generation * 0.9 and row["ttft p50 ms"] >= 20 * 0.9
        assert row["total p50 ms"] >= row["generate p50 ms"] and row["images p50 ms"] > 0
        assert row["own p50 ms"] <= row["overhead p50 ms"] and row["total p95 ms"] >= row["total p50 ms"]
    (cached,) = written["tables"]["cached answers (the same ask again, k=3)"]
    assert cached["asks"] == 3 and 0 < cached["server p50 ms"] < cached["round trip p50 ms"]
    assert written["figures"]["k3_own_p50_ms"] == rows[1]["own p50 ms"]
    assert "3-page PDF" in written["description"] and "200 tokens/s" in written["description"]
