"""Every failure a user can act on is one line `error: ...` with exit code 2, and `--debug` shows
its traceback: an unreachable or malformed URL, a wrong key, a missing model offline, a collection
another process holds, bad JSON options."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.testing.servers import free_port

runner = CliRunner()


def one_line_error(*args: str) -> str:
    """The command's only output line (on stderr), after checking the exit code."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_an_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error("collections", "list", "--url", url)
    assert f"cannot reach {url}" in line and "--url" in line


@pytest.mark.parametrize("url", ["localhost:8000", "http://", "ftp://host/x", "http://host:abc"])
def test_a_malformed_url_says_how_to_write_one(url):
    assert "give it as http://host:port" in one_line_error("jobs", "list", "--url", url)


def test_a_wrong_key_is_the_servers_message(server):
    line = one_line_error("collections", "list", "--url", server, "--api-key", "wrong")
    assert "API key" in line or "key" in line.lower()


def test_a_missing_model_offline_says_what_to_set(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    data = ["--data-dir", str(tmp_path / "data")]
    line = one_line_error("collections", "create", "docs", "-m", "vidore/colqwen2.5-v0.2", *data)
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in line


def test_a_collection_another_process_holds_is_one_line_for_every_command(tmp_path):
    from pagelens.index.collections import Collections

    holder = Collections(tmp_path / "data")  # as a running `pagelens serve` holds it
    holder.create("docs")
    data = ["--data-dir", str(tmp_path / "data")]
    try:
        for command in (["collections", "info", "docs"], ["documents", "list", "-c", "docs"]):
            line = one_line_error(*command, *data)
            assert "is open in another process" in line and "--url" in line
        listed = runner.invoke(app, ["collections", "list", *data])
        assert listed.exit_code == 0 and "docs" in listed.output and "unreadable: " in listed.output
    finally:
        holder.close()


def test_bad_json_options_and_refused_combinations(tmp_path):
    data = ["--data-dir", str(tmp_path / "data")]
    assert "--filter is not valid JSON" in one_line_error("search", "q", "-c", "docs", "--filter", "{year: 1}", *data)
    assert "--filter.year.$gte" in one_line_error("search", "q", "-c", "d", "--filter", '{"year": {"$gte": "x"}}')
    assert "--metadata must be a JSON object" in one_line_error(
        "documents", "patch", "x", "-c", "docs", "--metadata", "[1]", *data
    )
    (tmp_path / "a.png").write_bytes(b"")
    line = one_line_error("index", "add", str(tmp_path / "a.png"), "-c", "docs", "--no-wait", *data)
    assert "--no-wait needs --url" in line


def test_debug_shows_the_traceback_and_the_line(tmp_path):
    args = ["collections", "info", "nope", "--data-dir", str(tmp_path / "data")]
    assert one_line_error(*args) == "error: no collection 'nope'"
    result = runner.invoke(app, ["--debug", *args])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr and "pagelens.errors.NotFound" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: no collection 'nope'"
