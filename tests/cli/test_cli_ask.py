"""`pagelens ask` embedded (the tiny ColQwen2.5 in this process) and over --url (a real `pagelens
serve --llm-url ...` process), both answered by the stand-in OpenAI-compatible server; and
`Client.ask`, whole and streamed, against that server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pagelens.client import Client
from pagelens.errors import GeneratorFailed, NotFound
from pagelens.testing.llm_standin import StandInLLM, image_urls
from tests.api.server import running_server
from tests.index.test_pdf import make_pdf
from tests.rag.documents import text_pdf

runner = CliRunner()
ANSWER = "The report covers three quarters [1][2]."
KEY, LLM_KEY = "cli-ask-key", "sk-cli-llm"


@pytest.fixture(scope="module")
def standin():
    server = StandInLLM(ANSWER, tokens_per_second=1000)
    with server.running() as url:
        server.url = url
        yield server


@pytest.fixture(scope="module")
def served(standin, tiny_model, tmp_path_factory):
    """A real `pagelens serve` process answering with the stand-in."""
    log = tmp_path_factory.mktemp("ask-server") / "server.log"
    extra = ("--llm-url", standin.url, "--llm-api-key", LLM_KEY, "--llm-images", "on")
    with running_server(tiny_model, api_key=KEY, log_path=log, extra_args=extra) as url:
        yield url


def run(*args: str, expect: int = 0):
    result = runner.invoke(app_(), list(args))
    assert result.exit_code == expect, result.output
    return result


def app_():
    from pagelens.cli import app

    return app


def test_ask_embedded_streams_the_answer_then_the_cited_pages(tmp_path, tiny_model, standin):
    data = ["--data-dir", str(tmp_path / "data"), "--model", str(tiny_model)]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(text_pdf(["Quarter one: revenue 40 M", "", "Quarter three: revenue 42 M"]))
    run("index", "add", str(pdf), "-c", "docs", *data)
    asked = len(standin.requests)
    llm = ["--llm-url", standin.url, "--llm-api-key", LLM_KEY]
    body = json.loads(run("ask", "What does it cover?", "-c", "docs", "-k", "2", "--json", *data, *llm).stdout)
    assert body["answer"] == ANSWER and body["cached"] is False and body["model"] == "standin-vlm"
    assert [s["name"] for s in body["sources"]] == ["report.pdf", "report.pdf"] and body["timings"]["total_ms"] > 0
    assert len(standin.requests) == asked + 1 and len(image_urls(standin.requests[-1])) == 2
    assert standin.headers[-1]["authorization"] == f"Bearer {LLM_KEY}"
    shown = run("ask", "What does it cover?", "-c", "docs", "-k", "3", *data, *llm, "--llm-images", "off").stdout
    assert shown.startswith(ANSWER) and "sources:" in shown and "[3] report.pdf, page" in shown
    prompt = standin.requests[-1]["messages"][1]["content"]  # text layers instead of images
    assert image_urls(standin.requests[-1]) == [] and "Quarter three: revenue 42 M" in prompt
    assert prompt.count("(this page has no text layer)") == 1


def test_ask_embedded_without_an_answer_model_names_the_flags_before_loading_a_model(tmp_path):
    result = run("ask", "why?", "-c", "docs", "--data-dir", str(tmp_path / "data"), "--model", "/no/such/model",
                 expect=2)  # fmt: skip
    assert "--llm-url" in result.output and "--llm-model" in result.output


def test_ask_over_url_and_the_client(served, standin, tmp_path):
    remote = ["--url", served, "--api-key", KEY]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(2))
    run("index", "add", str(pdf), "-c", "remote-docs", *remote)
    first = json.loads(run("ask", "What does it cover?", "-c", "remote-docs", "--json", *remote).stdout)
    assert first["answer"] == ANSWER and first["cached"] is False and len(first["sources"]) == 2
    assert standin.headers[-1]["authorization"] == f"Bearer {LLM_KEY}"
    shown = run("ask", "what does it COVER?", "-c", "remote-docs", *remote)
    assert shown.stdout.startswith(ANSWER) and "(cached)" in shown.output
    assert "--llm-" in run("ask", "x", "-c", "remote-docs", "--llm-url", "http://x", *remote, expect=2).output
    with Client(served, api_key=KEY) as client:
        search = client.search("remote-docs", "anything else?", k=1)
        whole = client.ask("remote-docs", "anything else?", k=1)
        assert whole["sources"] == search and whole["answer"] == ANSWER and whole["cached"] is False
        events = list(client.ask("remote-docs", "anything else?", k=1, max_tokens=100, stream=True))
        assert events[0] == ("sources", {"sources": search}) and events[-1][0] == "done"
        assert "".join(data["text"] for event, data in events if event == "token") == ANSWER
        with pytest.raises(NotFound):
            client.ask("no-such-collection", "why?")
        standin.fail(429, "slow down")
        try:
            with pytest.raises(GeneratorFailed, match="slow down"):
                list(client.ask("remote-docs", "a new question", stream=True))
            with pytest.raises(GeneratorFailed, match="429"):
                client.ask("remote-docs", "a new question")
        finally:
            standin.behave()


def test_ask_embedded_with_the_in_process_vlm(tmp_path, tiny_model, tiny_vlm_dir):
    data = ["--data-dir", str(tmp_path / "data"), "--model", str(tiny_model)]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(2))
    run("index", "add", str(pdf), "-c", "docs", *data)
    body = json.loads(run("ask", "Which colour?", "-c", "docs", "-k", "1", "--max-tokens", "4", "--json", *data,
                          "--llm-model", str(tiny_vlm_dir)).stdout)  # fmt: skip
    assert len(body["sources"]) == 1 and 0 < body["usage"]["completion_tokens"] <= 4 and body["cached"] is False
    assert body["timings"]["generate_ms"] > 0 and body["model"]
