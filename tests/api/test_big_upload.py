"""A 1 GB upload through a real `pagelens serve`: streamed to disk as it arrives and ingested from
the file (PDFium reads the pages it needs), so the server's RSS never rises by more than 100 MB;
the document is stored whole and its file kept byte for byte."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx

from pagelens.bench.proc_status import memory_status
from tests.api.server import running_server

KEY = "big-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
PADDING = 1_000_000_000  # bytes of an unused stream object: the file is ~1 GB, its two pages tiny
RSS_BUDGET_BYTES = 100 * 1024 * 1024


def write_big_pdf(path: Path, padding: int) -> str:
    """A valid two-page PDF carrying `padding` bytes in an object no page uses; its SHA-256."""
    digest = hashlib.sha256()
    offsets: list[int] = []
    written = 0
    with open(path, "wb") as file:

        def put(data: bytes) -> None:
            nonlocal written
            file.write(data)
            digest.update(data)
            written += len(data)

        put(b"%PDF-1.4\n")
        contents = b"0 0 1 rg 20 20 120 160 re f"
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 300] /Contents 5 0 R >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 5 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(contents) + contents + b"\nendstream",
        ]
        for number, body in enumerate(objects, start=1):
            offsets.append(written)
            put(b"%d 0 obj\n" % number + body + b"\nendobj\n")
        offsets.append(written)
        put(b"6 0 obj\n<< /Length %d >>\nstream\n" % padding)
        chunk = b"\0" * (1 << 20)
        for start in range(0, padding, len(chunk)):
            put(chunk[: min(len(chunk), padding - start)])
        put(b"\nendstream\nendobj\n")
        xref = written
        put(b"xref\n0 7\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
        put(b"trailer\n<< /Size 7 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return digest.hexdigest()


def server_pid(url: str) -> int:
    """The pid of the server listening at `url` (the only `pagelens.cli serve` with that port)."""
    port = url.rsplit(":", 1)[1]
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = status.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in command and port.encode() in command:
            return int(status.parent.name)
    raise AssertionError(f"no server process on port {port}")


def test_a_1_gb_upload_never_raises_the_servers_rss_by_100_mb(tiny_model, tmp_path):
    big = tmp_path / "big.pdf"
    sha256 = write_big_pdf(big, PADDING)
    log = tmp_path / "server.log"
    with running_server(tiny_model, api_key=KEY, log_path=log, env={"PAGELENS_PDF_DPI": "36"}) as url:
        pid = server_pid(url)
        assert httpx.post(f"{url}/collections", json={"name": "c"}, headers=HEADERS).status_code == 201
        httpx.post(f"{url}/embeddings", json={"input_type": "text", "inputs": ["warm"]}, headers=HEADERS)
        baseline = memory_status(pid)["VmRSS"]
        peak, done = baseline, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, memory_status(pid)["VmRSS"])
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with open(big, "rb") as file:
                response = httpx.post(f"{url}/collections/c/documents", headers=HEADERS, timeout=600,
                                      files={"file": ("big.pdf", file, "application/pdf")})  # fmt: skip
        finally:
            done.set()
            sampler.join()
        assert response.status_code == 200, response.text
        assert response.json()["pages"] == 2
        assert peak - baseline <= RSS_BUDGET_BYTES, f"RSS rose by {(peak - baseline) / 2**20:.0f} MiB"
        info = httpx.get(f"{url}/collections/c/documents/{response.json()['id']}", headers=HEADERS).json()
        assert info["sha256"] == sha256 and info["bytes"] == big.stat().st_size
        hits = httpx.post(f"{url}/collections/c/search", json={"query": "q", "k": 5}, headers=HEADERS).json()
        assert sorted(hit["page"] for hit in hits["results"]) == [1, 2]
        assert not list((tmp_path / "data" / "_jobs").glob("*/upload")), "the job's copy is gone once stored"
