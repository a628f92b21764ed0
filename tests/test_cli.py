"""The command line, end to end on a tiny checkpoint: make-tiny, embed, demo, families."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.engine import Engine
from pagelens.models import Embedder
from tests.conftest import encode, make_page

runner = CliRunner()


def test_make_tiny_then_embed_writes_the_engine_vectors(tmp_path):
    checkpoint = tmp_path / "tiny"
    made = runner.invoke(app, ["make-tiny", "--family", "colmodernvbert", str(checkpoint)])
    assert made.exit_code == 0, made.output
    page = make_page(400, 520, 7)
    (tmp_path / "page.png").write_bytes(encode(page))
    out = tmp_path / "out.npz"
    args = ["embed", "--model", str(checkpoint), "--image", str(tmp_path / "page.png"), "--query", "revenue?"]
    result = runner.invoke(app, [*args, "--query", "tables", "--out", str(out), "--dtype", "float32"])
    assert result.exit_code == 0, result.output

    stored = np.load(out, allow_pickle=False)
    assert sorted(stored.files) == ["image_0", "info", "query_0", "query_1"]
    info = json.loads(str(stored["info"]))
    assert info["family"] == "colmodernvbert" and info["dim"] == 128
    with Engine(Embedder.load(str(checkpoint), device="cpu", dtype="float32")) as engine:
        (expected_page,) = engine.embed_images([page])
        expected_queries = engine.embed_queries(["revenue?", "tables"])
    np.testing.assert_allclose(stored["image_0"], expected_page, atol=1e-5)
    np.testing.assert_allclose(stored["query_1"], expected_queries[1], atol=1e-5)


def test_embed_reports_a_bad_image_with_its_index_and_fails(tmp_path):
    runner.invoke(app, ["make-tiny", "--family", "colqwen2_5", str(tmp_path / "tiny")])
    (tmp_path / "good.png").write_bytes(encode(make_page(200, 200)))
    (tmp_path / "bad.png").write_bytes(b"%PDF-1.4 not an image")
    result = runner.invoke(
        app,
        ["embed", "-m", str(tmp_path / "tiny"), "-i", str(tmp_path / "good.png"), "-i", str(tmp_path / "bad.png")],
    )
    assert result.exit_code == 2
    assert "input 1" in result.output and "PDF" in result.output
    assert not (tmp_path / "embeddings.npz").exists()


def test_unknown_family_and_missing_model_fail_cleanly(tmp_path):
    result = runner.invoke(app, ["make-tiny", "--family", "colbert", str(tmp_path / "x")])
    assert result.exit_code == 2 and "supported" in result.output
    result = runner.invoke(app, ["embed", "-m", str(tmp_path / "nope"), "-q", "hello"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_demo_and_families_run():
    result = runner.invoke(app, ["demo", "--family", "colqwen2_5"])
    assert result.exit_code == 0, result.output
    assert "MaxSim(query, page)" in result.output
    listing = runner.invoke(app, ["families"])
    assert "colpali" in listing.output and "bigemma3" in listing.output
