"""Every collection, document and search command, run embedded (the tiny model in this process, on
a data directory) and against the session's real server (`--url`), through the same steps."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from tests.api.server import REAL_KEY
from tests.index.test_pdf import make_pdf

runner = CliRunner()


@dataclass
class Where:
    """The options that choose a mode: `base` for every command, `model` where one may load."""

    mode: str
    base: list[str]
    model: list[str]

    def run(self, *args: str, model: bool = False, expect: int = 0, input: str | None = None):
        result = runner.invoke(app, [*args, *self.base, *(self.model if model else [])], input=input)
        assert result.exit_code == expect, result.output
        return result

    def json(self, *args: str, **options) -> dict:
        return json.loads(self.run(*args, **options).stdout)


@pytest.fixture(params=["embedded", "url"])
def where(request, tmp_path, tiny_model) -> Where:
    if request.param == "embedded":
        return Where("embedded", ["--data-dir", str(tmp_path / "data")], ["--model", str(tiny_model)])
    return Where("url", ["--url", request.getfixturevalue("server"), "--api-key", REAL_KEY], [])


def test_every_collection_document_and_search_command(where, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:8]}"  # the session server is shared with other tests
    created = where.run("collections", "create", name, model=True)
    assert f"created collection {name} for " in created.output
    assert where.run("collections", "create", name, model=True, expect=2).output.strip().endswith("already exists")
    listed = where.json("collections", "list", "--json")["collections"]
    assert [c["documents"] for c in listed if c["name"] == name] == [0]

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(2))
    added = where.run("index", "add", str(pdf), "-c", name, "--metadata", '{"team": "x", "year": 2021}', model=True)
    assert "2 pages, added" in added.output
    assert where.json("collections", "info", name)["pages"] == 2
    table = where.run("collections", "list").output
    assert any(line.split()[:3] == [name, "1", "2"] for line in table.splitlines()), table

    (document,) = where.json("documents", "list", "-c", name, "--json")["documents"]
    assert document["name"] == "report.pdf" and document["id"] in where.run("documents", "list", "-c", name).output
    doc_id = document["id"]
    assert where.json("documents", "info", doc_id, "-c", name)["metadata"] == {"team": "x", "year": 2021}
    patch = '{"year": null, "reviewed": true}'
    patched = where.json("documents", "patch", doc_id, "-c", name, "--metadata", patch)
    assert patched["metadata"] == {"team": "x", "reviewed": True}

    found = where.json(
        "search", "revenue", "-c", name, "--json", "-k", "5", "--filter", '{"reviewed": true}', model=True
    )
    assert sorted(hit["page"] for hit in found["results"]) == [1, 2]
    assert found["results"][0]["metadata"] == {"team": "x", "reviewed": True}
    none = where.json("search", "revenue", "-c", name, "--json", "--filter", '{"team": {"$in": ["y"]}}', model=True)
    assert none == {"results": []}
    table = where.run("search", "revenue", "-c", name, "-k", "1", "--mode", "fast", model=True).output
    assert f"report.pdf ({doc_id})" in table

    page = where.run("documents", "page", doc_id, "2", "-c", name, "-o", str(tmp_path / "p2.png"), "--full")
    assert "wrote" in page.output and (tmp_path / "p2.png").read_bytes().startswith(b"\x89PNG")
    where.run("documents", "file", doc_id, "-c", name, "-o", str(tmp_path / "back.pdf"))
    assert (tmp_path / "back.pdf").read_bytes() == pdf.read_bytes()

    jobs = where.json("jobs", "list", "-c", name, "--json")["jobs"]
    if where.mode == "url":  # every upload to a server is an ingest job
        assert [(job["state"], job["document_id"]) for job in jobs] == [("done", doc_id)]
    else:  # an embedded ingest runs in the command's process
        assert jobs == [] and where.run("jobs", "list").output.strip() == "no ingest jobs"

    archive = tmp_path / "snapshot.tar"
    assert "exported collection" in where.run("collections", "export", name, str(archive)).output
    copy = f"{name}-copy"
    imported = where.run("collections", "import", str(archive), "--as", copy).output
    assert f"imported collection {copy}: 1 documents, 2 pages" in imported
    copied = where.json("search", "revenue", "-c", copy, "--json", "-k", "5", model=True)
    assert copied == where.json("search", "revenue", "-c", name, "--json", "-k", "5", model=True)
    assert (
        where.run("collections", "import", str(archive), "--as", copy, expect=2)
        .output.strip()
        .endswith("already exists")
    )
    where.run("collections", "delete", copy, "--yes")

    assert f"deleted document {doc_id}" in where.run("documents", "delete", doc_id, "-c", name).output
    assert where.run("documents", "list", "-c", name).output.strip() == f"no documents in {name}"
    kept = where.run("collections", "delete", name, input="n\n", expect=1)
    assert "Aborted" in kept.output and where.json("collections", "info", name)["name"] == name
    where.run("collections", "delete", name, "--yes")
    assert name not in [c["name"] for c in where.json("collections", "list", "--json")["collections"]]
    gone = where.run("documents", "list", "-c", name, expect=2)
    assert gone.output.strip() == f"error: no collection {name!r}"


def test_no_model_loads_for_the_commands_that_need_none(tmp_path, tiny_model, monkeypatch):
    """Listing, inspecting, patching, reading and deleting work with a model that cannot load."""
    where = Where("embedded", ["--data-dir", str(tmp_path / "data")], ["--model", str(tiny_model)])
    where.run("index", "add", str(_pdf(tmp_path)), "-c", "docs", model=True)
    from pagelens.models import Embedder

    monkeypatch.setattr(Embedder, "load", staticmethod(lambda *a, **k: pytest.fail("a model was loaded")))
    (document,) = where.json("documents", "list", "-c", "docs", "--json")["documents"]
    for command in (
        ["collections", "list"],
        ["collections", "info", "docs"],
        ["documents", "info", document["id"], "-c", "docs"],
        ["documents", "patch", document["id"], "-c", "docs", "--metadata", '{"a": 1}'],
        ["documents", "page", document["id"], "1", "-c", "docs", "-o", str(tmp_path / "p.png")],
        ["jobs", "list"],
        ["documents", "delete", document["id"], "-c", "docs"],
        ["collections", "delete", "docs", "--yes"],
    ):
        where.run(*command)


def _pdf(tmp_path):
    path = tmp_path / "one.pdf"
    path.write_bytes(make_pdf(1))
    return path


def test_embed_on_a_server_gives_the_vectors_embedded_here(server, tiny_model, tmp_path):
    import numpy as np

    (tmp_path / "report.pdf").write_bytes(make_pdf(2))
    common = ["embed", "-i", str(tmp_path / "report.pdf"), "-q", "revenue?", "--device", "cpu", "--dtype", "float32"]
    here = runner.invoke(app, [*common, "-m", str(tiny_model), "-o", str(tmp_path / "here.npz")])
    there = runner.invoke(app, [*common, "--url", server, "--api-key", REAL_KEY, "-o", str(tmp_path / "there.npz")])
    assert here.exit_code == 0 and there.exit_code == 0, here.output + there.output
    local, remote = np.load(tmp_path / "here.npz"), np.load(tmp_path / "there.npz")
    assert sorted(local.files) == sorted(remote.files) == ["image_0", "image_1", "info", "query_0", "sources"]
    assert json.loads(str(remote["info"]))["model"] == str(tiny_model)
    for name in ("image_0", "image_1", "query_0"):
        np.testing.assert_allclose(remote[name], local[name], atol=1e-4)
