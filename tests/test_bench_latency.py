"""`pagelens bench latency` produces seed 004's report against a locally started server."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pagelens.cli import app
from tests.api.server import REAL_KEY

REPORT_KEYS = {
    "cold_start_ms", "warm_start_avg_ms", "warm_start_p50_ms", "warm_start_p95_ms",
    "post_scaledown_cold_start_ms", "summary",
}  # fmt: skip


def test_latency_report_against_a_local_server(server, tmp_path):
    out = tmp_path / "report.json"
    args = ["bench", "latency", "--url", server, "--api-key", REAL_KEY, "--num-warmup", "3"]
    result = CliRunner().invoke(app, [*args, "--test-scaledown", "--scaledown-wait", "0.2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) >= REPORT_KEYS
    assert report["cold_start_ms"] > 0 and report["post_scaledown_cold_start_ms"] > 0
    assert 0 < report["warm_start_p50_ms"] <= report["warm_start_p95_ms"]
    assert "warm p95" in result.output and report["summary"] in result.output


def test_latency_bench_fails_clearly_with_a_wrong_key(server, tmp_path):
    result = CliRunner().invoke(app, ["bench", "latency", "--url", server, "--api-key", "nope", "--num-warmup", "1"])
    assert result.exit_code != 0 and "401" in str(result.exception)
