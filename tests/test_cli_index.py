"""`pagelens index add` and `pagelens search`, embedded (model in process) and against a server."""

from __future__ import annotations

from typer.testing import CliRunner

from pagelens.cli import app
from tests.api.server import REAL_KEY
from tests.conftest import encode, make_page
from tests.index.sample_documents import encrypted
from tests.index.test_pdf import make_pdf

runner = CliRunner()
PASSWORD = "cli-Secret-0xBEEF"


def test_embedded_index_and_search_resume_without_duplicates(tiny_model, tmp_path):
    (tmp_path / "report.pdf").write_bytes(make_pdf(3))
    (tmp_path / "scan.png").write_bytes(encode(make_page(200, 260, 4)))
    (tmp_path / "notes.txt").write_bytes(b"not a document")
    common = ["--model", str(tiny_model), "--data-dir", str(tmp_path / "data")]
    first = runner.invoke(
        app, ["index", "add", str(tmp_path / "report.pdf"), str(tmp_path / "scan.png"), "-c", "docs", *common]
    )
    assert first.exit_code == 0, first.output
    assert "3 pages, added" in first.output and "1 pages, added" in first.output
    assert f"[1/2] {tmp_path / 'report.pdf'}: 0/3 pages" in first.output  # per page, one line per report here
    assert f"[1/2] {tmp_path / 'report.pdf'}: 3/3 pages" in first.output
    assert f"[2/2] {tmp_path / 'scan.png'}: 1/1 pages" in first.output
    (tmp_path / "locked.pdf").write_bytes(encrypted(make_pdf(2), PASSWORD))
    files = [str(tmp_path / name) for name in ("report.pdf", "notes.txt", "locked.pdf")]
    again = runner.invoke(app, ["index", "add", *files, "-c", "docs", "--password", PASSWORD, *common])
    assert again.exit_code == 1  # the text file failed; the PDF was skipped as already stored
    assert "already stored" in again.output and "neither a PDF, an image" in again.output
    assert "locked.pdf: 2 pages, added" in again.output and PASSWORD not in again.output
    found = runner.invoke(app, ["search", "quarterly revenue", "-c", "docs", "-k", "4", *common])
    assert found.exit_code == 0, found.output
    rows = [line for line in found.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4 and "report.pdf" in found.output
    missing = runner.invoke(app, ["search", "q", "-c", "nope", *common])
    assert missing.exit_code == 2 and "no collection" in missing.output


def test_page_progress_off_a_terminal_prints_a_line_at_most_every_few_seconds(capsys):
    from pagelens.cli.progress import PageProgress

    now = [0.0]
    progress = PageProgress("big.pdf", tty=False, clock=lambda: now[0])
    for done in (0, 8, 16, 24, 32, 40):
        progress(done, 40)
        now[0] += 4.0  # a batch every 4 s: a line at 0, then every LINE_SECONDS, and the last
    progress.finish()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["big.pdf: 0/40 pages", "big.pdf: 24/40 pages", "big.pdf: 40/40 pages"]


def test_index_and_search_against_a_server(server, tmp_path):
    (tmp_path / "a.pdf").write_bytes(make_pdf(2))
    remote = ["--url", server, "--api-key", REAL_KEY]
    added = runner.invoke(app, ["index", "add", str(tmp_path / "a.pdf"), "-c", "remote", *remote])
    assert added.exit_code == 0, added.output
    (tmp_path / "locked.pdf").write_bytes(encrypted(make_pdf(3), PASSWORD))
    locked = ["index", "add", str(tmp_path / "locked.pdf"), "-c", "remote", *remote]
    refused = runner.invoke(app, locked)
    assert refused.exit_code == 1 and "the PDF is encrypted: give its password" in refused.output
    opened = runner.invoke(app, [*locked, "--password", PASSWORD])
    assert opened.exit_code == 0 and "3 pages, added" in opened.output, opened.output
    found = runner.invoke(app, ["search", "anything", "-c", "remote", "-k", "2", *remote])
    assert found.exit_code == 0 and "a.pdf" in found.output


def test_an_out_of_range_prefetch_is_refused_before_any_model_loads(tmp_path):
    refused = runner.invoke(app, ["search", "q", "-c", "docs", "--prefetch", "0", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "--prefetch" in refused.output


def test_a_collection_another_process_holds_open_fails_before_the_model_loads(tmp_path):
    from pagelens.index.collections import Collections

    server_side = Collections(tmp_path / "data")  # as a running `pagelens serve` would hold it
    server_side.create("docs")
    (tmp_path / "a.pdf").write_bytes(make_pdf(1))
    try:
        common = ["--model", str(tmp_path / "no-such-model"), "--data-dir", str(tmp_path / "data")]
        for command in (["index", "add", str(tmp_path / "a.pdf"), "-c", "docs"], ["search", "q", "-c", "docs"]):
            result = runner.invoke(app, [*command, *common])
            assert result.exit_code == 2, result.output
            assert "is open in another process" in result.output and "--url" in result.output
            assert "no-such-model" not in result.output  # the model was never loaded
        assert server_side.get("docs").store.page_count() == 0  # the holder still works, nothing was stored
    finally:
        server_side.close()
