"""`pagelens bench engine | http | priority` on the tiny architectures: what they write, not how fast."""

from __future__ import annotations

from typer.testing import CliRunner

from pagelens.cli import app
from tests.bench_checks import assert_published, doc_copy

CONFIGURATIONS = ("seed 001 loop", "naive float32 loop", "colpali-engine batched forward")
COLUMNS = {"pages/s", "x seed 001", "page p50 s", "page p95 s", "MFU %", "queries/s", "query p50 ms", "query p95 ms"}


def _invoke(tmp_path, name: str, *options: str):
    docs, out = doc_copy(tmp_path), tmp_path / f"{name}.json"
    result = CliRunner().invoke(app, ["bench", name, *options, "--out", str(out), "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    return out, docs


def _check_rows(written: dict, arch: str, ours: str) -> None:
    (title,) = [title for title in written["tables"] if title.startswith(arch)]
    rows = {row["configuration"]: row for row in written["tables"][title]}
    assert [any(label.startswith(c) for label in rows) for c in CONFIGURATIONS] == [True] * 3
    assert any(label.startswith(ours) for label in rows)
    for row in rows.values():
        assert set(row) >= COLUMNS
        assert row["pages/s"] > 0 and row["queries/s"] > 0 and 0 < row["MFU %"] < 100
        assert 0 < row["page p50 s"] <= row["page p95 s"] and 0 < row["query p50 ms"] <= row["query p95 ms"]
    assert rows[next(label for label in rows if label.startswith("seed 001"))]["x seed 001"] == 1.0


def test_bench_engine_on_the_tiny_architectures(tmp_path):
    archs = ("tiny-colqwen2.5", "tiny-colmodernvbert", "tiny-colpali")
    options = [*(option for arch in archs for option in ("--arch", arch)), "--pages", "2", "--queries", "2"]
    out, docs = _invoke(tmp_path, "engine", *options)
    written = assert_published("engine", out, docs, table_rows=12)
    assert written["machine"]["bf16_matmul_gflops"] > 0
    assert "--arch tiny-colqwen2.5 --arch tiny-colmodernvbert --arch tiny-colpali" in written["command"]
    for arch in archs:
        _check_rows(written, arch, "pagelens engine")
        figures = written["figures"][arch]
        assert figures["page_gflops"] > 0 and figures["query_gflops"] > 0  # tiny ColPali pages: 26 tokens
        parity = ("worst_cosine_bf16_vs_float32", "worst_cosine_vs_seed001_pages", "worst_cosine_vs_seed001_queries")
        assert [figures[name] >= 0.999 for name in parity] == [True] * 3, figures
    # colpali-engine's documented ColPali call computes logits at every position (and a loss over them), the
    # engine one position's; the Qwen and ModernVBert calls compute what the vectors need
    as_called = {arch: written["figures"][arch]["page_gflops_as_called"] / written["figures"][arch]["page_gflops"]
                 for arch in archs}  # fmt: skip
    assert as_called["tiny-colpali"] > 1.2 and as_called["tiny-colqwen2.5"] == as_called["tiny-colmodernvbert"] == 1


def test_bench_http_drives_the_server_with_concurrent_clients(tmp_path):
    options = ["--arch", "tiny-colmodernvbert", "--pages", "3", "--queries", "2", "--clients", "2"]
    out, docs = _invoke(tmp_path, "http", *options)
    written = assert_published("http", out, docs, table_rows=4)
    _check_rows(written, "tiny-colmodernvbert", "pagelens over HTTP (2 clients")
    figures = written["figures"]["tiny-colmodernvbert"]
    assert figures["http_vs_colpali_batched"] > 0 and figures["http_vs_seed001"] > 0


def test_bench_priority_reports_both_engine_modes(tmp_path):
    out, docs = _invoke(tmp_path, "priority", "--arch", "tiny-colqwen2.5", "--queries", "2")
    written = assert_published("priority", out, docs, table_rows=2)
    rows = written["tables"]["main"]
    assert [row["ratio"] for row in rows] == [row["during ingest p50 ms"] / row["idle p50 ms"] for row in rows]
    assert written["figures"]["default_mode_ratio"] == rows[0]["ratio"]


def test_compared_configurations_take_turns_and_report_their_median_round():
    from pagelens.bench.engine import alternating

    calls: list[str] = []

    def measure(label: str, seconds: list[float]):
        def call():
            calls.append(label)
            return seconds.pop(0), [], [label]

        return call

    timings = alternating(
        {"a": measure("a", [9.0, 3.0, 1.0, 2.0]), "b": measure("b", [9.0, 5.0, 7.0, 6.0])}, 3, warm=True
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-first, b-first, a-first
    assert timings["a"][0] == 2.0 and timings["b"][0] == 6.0  # the untimed first calls (9 s) never count
