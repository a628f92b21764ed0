"""A SIGKILL of a real `pagelens serve` in the middle of an HTTP upload: after a restart on the same
data directory, documents uploaded before are whole and searchable, the interrupted one is whole or
absent (never partial, no files left behind), and uploading it again stores it exactly once."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import httpx

from pagelens.index.pages import POOLED_ROWS
from tests.api.server import running_server, start_server
from tests.index.test_pdf import make_pdf

KEY = "durability-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ENV = {"PAGELENS_PDF_DPI": "36"}  # small renders: the tiny model embeds a page in milliseconds


def upload(url: str, data: bytes, name: str) -> httpx.Response:
    files = {"file": (name, data, "application/pdf")}
    return httpx.post(f"{url}/collections/c/documents", files=files, headers=HEADERS, timeout=300)


def test_sigkill_mid_upload_leaves_whole_documents_only(tiny_model, tmp_path):
    log = tmp_path / "server.log"
    finished, interrupted = make_pdf(3), make_pdf(80)
    interrupted_id = hashlib.sha256(interrupted).hexdigest()[:32]
    mirror = tmp_path / "data" / "c" / "store.mirror" / "vectors.f16"
    process, url = start_server(tiny_model, api_key=KEY, log_path=log, env=ENV)
    replied = threading.Event()
    try:
        assert httpx.post(f"{url}/collections", json={"name": "c"}, headers=HEADERS).status_code == 201
        first = upload(url, finished, "finished.pdf")
        assert first.status_code == 200 and first.json()["pages"] == 3
        written_before = mirror.stat().st_size

        def upload_until_killed():
            try:
                upload(url, interrupted, "interrupted.pdf")
                replied.set()
            except httpx.TransportError:
                pass  # the server died under it

        uploader = threading.Thread(target=upload_until_killed, daemon=True)
        uploader.start()
        deadline = time.monotonic() + 120
        while mirror.stat().st_size < written_before + 3 * POOLED_ROWS * 128 * 2:  # 3 pages of it are stored
            assert time.monotonic() < deadline, "the upload never started storing pages"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        killed_mid_upload = not replied.is_set()
        process.wait()
        uploader.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert killed_mid_upload, "the upload finished before the kill: make the document longer"

    with running_server(tiny_model, api_key=KEY, log_path=log, env=ENV) as url:
        documents = httpx.get(f"{url}/collections/c/documents", headers=HEADERS).json()["documents"]
        assert [(d["name"], d["pages"]) for d in documents] == [("finished.pdf", 3)]
        assert httpx.get(f"{url}/collections/c/documents/{interrupted_id}/pages/1", headers=HEADERS).status_code == 404
        leftovers = [p.name for p in (tmp_path / "data" / "c" / "files").iterdir() if interrupted_id in p.name]
        assert leftovers == []
        hits = httpx.post(f"{url}/collections/c/search", json={"query": "a page", "k": 10}, headers=HEADERS).json()
        assert {hit["document_id"] for hit in hits["results"]} == {first.json()["id"]}
        assert len(hits["results"]) == 3

        again = upload(url, interrupted, "interrupted.pdf")
        assert again.status_code == 200
        assert again.json() == {"id": interrupted_id, "pages": 80, "created": True, "metadata_kept": False}
        repeat = upload(url, interrupted, "interrupted.pdf")
        assert repeat.json() == {"id": interrupted_id, "pages": 80, "created": False, "metadata_kept": True}
        documents = httpx.get(f"{url}/collections/c/documents", headers=HEADERS).json()["documents"]
        assert sorted((d["name"], d["pages"]) for d in documents) == [("finished.pdf", 3), ("interrupted.pdf", 80)]
        fast = httpx.post(f"{url}/collections/c/search", json={"query": "a page", "k": 100, "mode": "fast"},
                          headers=HEADERS).json()["results"]  # fmt: skip
        assert len(fast) == 83
