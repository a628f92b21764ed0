"""`pagelens bench gpu` (`make bench-gpu`): its CPU dry run goes through every configuration the GPU
run measures (seed 001 loop, float32, colpali-engine batched, the engine, the real HTTP server) and
prints one table; without a GPU the real run is refused, naming the device; the attention choice."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from pagelens.cli import app
from tests.bench_checks import MACHINE_KEYS, doc_copy


def test_the_dry_run_measures_every_configuration_and_prints_one_table(tmp_path):
    docs, out = doc_copy(tmp_path), tmp_path / "gpu.json"
    before = docs.read_text()
    result = CliRunner().invoke(app, ["bench", "gpu", "--dry-run", "--out", str(out), "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["bench"] == "gpu" and "--dry-run" in written["command"]
    assert set(written["machine"]) >= MACHINE_KEYS and written["machine"]["device"] == "cpu"
    (rows,) = written["tables"].values()  # one table
    labels = [row["configuration"] for row in rows]
    expected = ["seed 001 loop", "naive float32 loop", "colpali-engine batched forward", "pagelens engine",
                "pagelens over HTTP"]  # fmt: skip
    assert [label.split(" (")[0] for label in labels] == expected
    assert all(row["architecture"] == "tiny-colqwen2.5" and row["pages/s"] > 0 and row["queries/s"] > 0 for row in rows)
    assert rows[2]["x colpali-engine"] == 1.0 and "batch 2" in labels[2] and "2 clients" in labels[4]
    figures = written["figures"]["tiny-colqwen2.5"]
    assert figures["attention"] == "sdpa" and figures["page_gflops"] > 0
    assert figures["worst_cosine_bf16_vs_float32"] > 0.99, "the engine's bf16 pages match the float32 loop's"
    assert written["description"].startswith("DRY RUN") and written["figures"]["budget_seconds"] == 480
    assert "| architecture | configuration | pages/s |" in result.output, "the table is printed"
    assert docs.read_text() == before, "a dry run never rewrites the docs"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal cannot happen")
def test_without_a_gpu_the_real_run_is_refused_naming_the_device(tmp_path):
    result = CliRunner().invoke(app, ["bench", "gpu", "--out", str(tmp_path / "gpu.json")])
    assert result.exit_code != 0
    assert "--device cuda: torch sees no CUDA device here" in result.output + str(result.exception)
    assert not (tmp_path / "gpu.json").exists()


def test_flash_attention_2_is_chosen_on_cuda_when_installed(monkeypatch, tmp_path):
    from pagelens.bench.gpu import best_attention
    from pagelens.bench.models import get_arch
    from pagelens.models import hardware

    bench_model = get_arch("tiny-colqwen2.5").build(tmp_path)
    monkeypatch.setattr(hardware, "flash_attention_available", lambda: True)
    assert best_attention(bench_model, torch.device("cuda")) == "flash_attention_2"
    assert best_attention(bench_model, torch.device("cpu")) == "sdpa"
    monkeypatch.setattr(hardware, "flash_attention_available", lambda: False)
    assert best_attention(bench_model, torch.device("cuda")) == "sdpa"


def test_make_bench_gpu_runs_the_command():
    from pagelens.bench.report import REPO_ROOT

    plan = subprocess.run(["make", "-n", "bench-gpu", "BENCH_ARGS=--dry-run"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "pagelens bench gpu --dry-run" in plan
