"""The command line, end to end on a tiny checkpoint: make-tiny, embed (images and PDFs), demo, families."""

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
    assert sorted(stored.files) == ["image_0", "info", "query_0", "query_1", "sources"]
    assert json.loads(str(stored["sources"])) == [{"file": str(tmp_path / "page.png"), "page": 1}]
    info = json.loads(str(stored["info"]))
    assert info["family"] == "colmodernvbert" and info["dim"] == 128
    with Engine(Embedder.load(str(checkpoint), device="cpu", dtype="float32")) as engine:
        (expected_page,) = engine.embed_images([page])
        expected_queries = engine.embed_queries(["revenue?", "tables"])
    np.testing.assert_allclose(stored["image_0"], expected_page, atol=1e-5)
    np.testing.assert_allclose(stored["query_1"], expected_queries[1], atol=1e-5)


def test_embed_gives_a_pdf_one_output_a_page_numbered_across_files(tiny_model, tmp_path):
    from pagelens.service import document_pages
    from pagelens.settings import Settings
    from tests.index.test_pdf import make_pdf

    (tmp_path / "a.png").write_bytes(encode(make_page(200, 240, 3)))
    (tmp_path / "report.pdf").write_bytes(make_pdf(2))
    out = tmp_path / "out.npz"
    files = ["-i", str(tmp_path / "a.png"), "-i", str(tmp_path / "report.pdf")]
    result = runner.invoke(app, ["embed", "-m", str(tiny_model), *files, "--out", str(out), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "image_2: shape" in result.output and f"<- {tmp_path / 'report.pdf'} page 2" in result.output
    stored = np.load(out, allow_pickle=False)
    assert [source["page"] for source in json.loads(str(stored["sources"]))] == [1, 1, 2]
    embedder = Embedder.load(str(tiny_model), device="cpu", dtype="float32")
    # as an ingest renders them: 150 dpi, within the model's page budget
    (pages,) = list(document_pages(make_pdf(2), Settings(), render_pixels=embedder.info.page_pixels))
    assert pages[1].width * pages[1].height < 417 * 625  # 150 dpi would be larger than the budget
    with Engine(embedder) as engine:
        expected = engine.embed_images(pages)
    np.testing.assert_allclose(stored["image_2"], expected[1], atol=1e-5)


def test_embed_names_the_file_that_fails_and_writes_nothing(tiny_model, tmp_path):
    (tmp_path / "good.png").write_bytes(encode(make_page(200, 200)))
    (tmp_path / "bad.png").write_bytes(b"%PDF-1.4 not an image")  # sniffed as what it is: a broken PDF
    (tmp_path / "notes.txt").write_bytes(b"plain text")
    for bad, says in (("bad.png", "PDF"), ("notes.txt", "neither a PDF, an image")):
        files = ["-i", str(tmp_path / "good.png"), "-i", str(tmp_path / bad)]
        result = runner.invoke(app, ["embed", "-m", str(tiny_model), *files])
        assert result.exit_code == 2, result.output
        (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: {tmp_path / bad}: ") and says in line
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
