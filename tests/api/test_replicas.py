"""Two `pagelens serve` replicas on one Qdrant (docs/scale.md, "Several replicas"): two real uvicorn
servers, each with its own data directory and its own runtime over the tiny ColQwen2.5 checkpoint,
sharing the collections of one Qdrant: a real server when PAGELENS_TEST_QDRANT_URL is set
(`[qdrant-server]`), else qdrant-client's local mode (`[qdrant-local]`: one client object both
servers share, as local mode allows one per directory). The test id says which ran.

What is shared: the collections, their model binding and every page (search on either replica
sees documents uploaded through either). What each replica owns: the uploaded files and records
(document list, page images, document deletes) and the ingest jobs."""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack

import httpx
import pytest

from pagelens.api import create_app
from pagelens.index.collections import Collections
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.servers import uvicorn_in_thread
from tests.conftest import encode, make_page
from tests.index.backends import backend_params, server_client
from tests.index.test_pdf import make_pdf

KEY = "replica-key-123"


@pytest.fixture(params=[param for param in backend_params() if param != "edge"])
def replicas(request, tiny_model, tmp_path):
    """Two base URLs of running servers sharing one Qdrant; their collections prefixed uniquely."""
    from qdrant_client import QdrantClient

    prefix = f"pagelens_replicas_{uuid.uuid4().hex[:8]}_"
    shared = QdrantClient(path=str(tmp_path / "qdrant")) if request.param == "qdrant-local" else None
    clients = [shared or server_client(), shared or server_client()]
    print(f"replicas on {request.param}")  # which Qdrant ran (shown with -s, and in the test id)
    with ExitStack() as stack:
        urls = []
        for name, client in zip("ab", clients, strict=True):
            settings = Settings(model=str(tiny_model), device="cpu", dtype="float32", api_key=KEY, pdf_dpi=72,
                                data_dir=str(tmp_path / name))  # fmt: skip
            collections = Collections(tmp_path / name, qdrant=client, prefix=prefix)
            runtime = Runtime(settings, collections=collections).start()
            stack.callback(runtime.close)
            urls.append(stack.enter_context(uvicorn_in_thread(create_app(runtime=runtime))))
        yield [stack.enter_context(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                                timeout=120)) for url in urls]  # fmt: skip
    for found in clients[0].get_collections().collections:
        if found.name.startswith(prefix):
            clients[0].delete_collection(found.name)
    for client in {id(c): c for c in clients}.values():
        client.close()


def upload(server: httpx.Client, data: bytes, name: str, **params) -> httpx.Response:
    return server.post("/collections/shared/documents", files={"file": (name, data)}, params=params)


def search_ids(server: httpx.Client, mode: str = "exact") -> set[str]:
    response = server.post("/collections/shared/search", json={"query": "quarterly revenue", "k": 10, "mode": mode})
    assert response.status_code == 200, response.text
    return {hit["document_id"] for hit in response.json()["results"]}


def test_two_replicas_on_one_qdrant_search_each_others_documents(replicas):
    a, b = replicas
    assert a.post("/collections", json={"name": "shared"}).status_code == 201
    assert [c["name"] for c in b.get("/collections").json()["collections"]] == ["shared"]
    assert b.post("/collections", json={"name": "shared"}).status_code == 409, "one collection, whoever made it"
    pdf = upload(a, make_pdf(3), "report.pdf")
    assert pdf.status_code == 200 and pdf.json()["pages"] == 3
    queued = upload(b, encode(make_page(160, 200, 4)), "scan.png", wait="false")  # a job of b's
    assert queued.status_code == 202
    job = queued.json()
    deadline = time.monotonic() + 60
    while (job := b.get(f"/jobs/{job['id']}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["state"] == "done", job
    both = {pdf.json()["id"], job["document_id"]}
    for server in (a, b):
        assert search_ids(server) == both and search_ids(server, "fast") == both
        assert server.get("/collections/shared").json()["pages"] == 4
    # each replica owns its uploads' files and records, and its jobs
    assert [d["name"] for d in a.get("/collections/shared/documents").json()["documents"]] == ["report.pdf"]
    assert [d["name"] for d in b.get("/collections/shared/documents").json()["documents"]] == ["scan.png"]
    assert a.get(f"/jobs/{job['id']}").status_code == 404
    elsewhere = a.get(f"/collections/shared/documents/{job['document_id']}/pages/1")
    assert elsewhere.status_code == 404 and "stored through another pagelens server" in elsewhere.text
    assert b.get(f"/collections/shared/documents/{job['document_id']}/pages/1").status_code == 200
    # the same bytes uploaded through the other replica: a record of its own over the stored pages, no second copy
    again = upload(b, make_pdf(3), "report-b.pdf")
    assert again.status_code == 200 and again.json()["id"] == pdf.json()["id"]
    assert a.get("/collections/shared").json()["pages"] == 4
    assert len(b.get("/collections/shared/documents").json()["documents"]) == 2
    # a delete removes the shared pages: every replica stops finding (and listing) the document at once
    assert a.delete(f"/collections/shared/documents/{pdf.json()['id']}").status_code == 200
    assert search_ids(b) == {job["document_id"]}
    assert [d["name"] for d in b.get("/collections/shared/documents").json()["documents"]] == ["scan.png"]
