"""A real `pagelens serve` restarted on the same data directory with another model: the old
collection answers 409 model_mismatch to search and upload, is listed as incompatible, and the
embedded CLI refuses it the same way (before loading any model); back on the first model,
everything is as it was."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from pagelens.cli import app
from tests.api.server import running_server
from tests.index.test_pdf import make_pdf

KEY = "binding-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ENV = {"PAGELENS_PDF_DPI": "36"}


def search(url: str) -> httpx.Response:
    return httpx.post(f"{url}/collections/c/search", json={"query": "revenue", "k": 3}, headers=HEADERS, timeout=60)


def upload(url: str, data: bytes) -> httpx.Response:
    files = {"file": ("b.pdf", data, "application/pdf")}
    return httpx.post(f"{url}/collections/c/documents", files=files, headers=HEADERS, timeout=120)


def test_a_restart_with_another_model_refuses_the_old_collection_and_changes_nothing(tiny_model, tmp_path):
    from pagelens.testing import build_tiny_checkpoint

    other_model = build_tiny_checkpoint("colqwen2_5", tmp_path / "other", seed=1)
    log = tmp_path / "server.log"  # the servers' data directory is tmp_path / "data"
    with running_server(tiny_model, api_key=KEY, log_path=log, env=ENV) as url:
        assert httpx.post(f"{url}/collections", json={"name": "c"}, headers=HEADERS).status_code == 201
        assert upload(url, make_pdf(2)).status_code == 200
        before = search(url).json()

    with running_server(other_model, api_key=KEY, log_path=log, env=ENV) as url:
        for response in (search(url), upload(url, make_pdf(4))):
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["type"] == "model_mismatch" and str(tiny_model) in error["message"]
        listed = httpx.get(f"{url}/collections", headers=HEADERS).json()["collections"]
        assert [(c["name"], c["pages"], c["compatible"]) for c in listed] == [("c", 2, False)]
        assert httpx.get(f"{url}/collections/c", headers=HEADERS).json()["model"]["model"] == str(tiny_model)

    common = ["-c", "c", "--model", str(other_model), "--data-dir", str(tmp_path / "data")]
    (tmp_path / "b.pdf").write_bytes(make_pdf(4))
    for command in (["search", "revenue"], ["index", "add", str(tmp_path / "b.pdf")]):
        refused = CliRunner().invoke(app, [*command, *common])
        assert refused.exit_code == 2, refused.output
        assert "holds vectors of" in refused.output and str(tiny_model) in refused.output

    with running_server(tiny_model, api_key=KEY, log_path=log, env=ENV) as url:
        assert search(url).json() == before
        assert httpx.get(f"{url}/collections/c", headers=HEADERS).json()["pages"] == 2
