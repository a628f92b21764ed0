"""A bounded soak of a real `pagelens serve` (tiny model, loopback): SOAK_REQUESTS mixed requests
from SOAK_CLIENTS threads (embeddings in three wire formats, uploads, duplicate uploads, searches,
deletes, bad inputs). No 5xx; the server's RSS and open file descriptors end within 10% of where
they were after a warm-up; every document whose last upload answered 200 and that was not deleted
since is whole (all its pages searchable) at the end."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pagelens.bench.proc_status import memory_status
from tests.api.server import start_server
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf

KEY = "soak-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SOAK_REQUESTS = 2000
SOAK_CLIENTS = 6
DOCUMENTS = [make_pdf(pages) for pages in (1, 2, 3, 4)] + [encode(make_page(160, 200, seed)) for seed in (1, 2)]
PAGES = [1, 2, 3, 4, 1, 1]
IMAGE = base64.b64encode(encode(make_page(120, 160, 9))).decode()


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class Soak:
    """The requests, and what the server answered for each document."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, headers=HEADERS, timeout=120)
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.lock = threading.Lock()
        self.document_locks = [threading.Lock() for _ in DOCUMENTS]
        self.stored = [False] * len(DOCUMENTS)  # after the last answered upload or delete of each

    def record(self, kind: str, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.statuses[(kind, response.status_code)] += 1
        return response

    def one(self, number: int) -> None:
        chooser = random.Random(number)
        kind = chooser.choice(["morphik", "embed", "openai", "upload", "upload", "search", "delete", "bad"])
        if kind == "morphik":
            self.record(kind, self.client.post("/embeddings", json={"input_type": "text", "inputs": ["q", "r"]}))
        elif kind == "embed":
            self.record(kind, self.client.post("/embed", json={"images": [IMAGE], "texts": ["revenue"]}))
        elif kind == "openai":
            body = {"input": ["what is it", f"data:image/png;base64,{IMAGE}"], "encoding_format": "base64"}
            self.record(kind, self.client.post("/v1/embeddings", json=body))
        elif kind == "search":
            body = {"query": "total", "k": 5, "mode": chooser.choice(["exact", "fast"])}
            self.record(kind, self.client.post("/collections/soak/search", json=body))
        elif kind == "bad":
            body = chooser.choice([{"input_type": "image", "inputs": ["bm90IGFuIGltYWdl"]}, {"inputs": []}])
            self.record(kind, self.client.post("/embeddings", json=body))
        else:
            index = chooser.randrange(len(DOCUMENTS))
            with self.document_locks[index]:  # the expected state of each document stays knowable
                if kind == "upload":
                    files = {"file": (f"d{index}", DOCUMENTS[index], "application/octet-stream")}
                    response = self.record(kind, self.client.post("/collections/soak/documents", files=files))
                    if response.status_code == 200:
                        self.stored[index] = True
                else:
                    document_id = hashlib.sha256(DOCUMENTS[index]).hexdigest()[:32]
                    response = self.record(kind, self.client.delete(f"/collections/soak/documents/{document_id}"))
                    if response.status_code in (200, 404):
                        self.stored[index] = False


@pytest.mark.slow
def test_a_soak_of_mixed_requests_leaves_no_5xx_no_leak_and_every_document_whole(tiny_model, tmp_path):
    process, url = start_server(tiny_model, api_key=KEY, log_path=tmp_path / "server.log",
                                env={"PAGELENS_PDF_DPI": "36"})  # fmt: skip
    try:
        soak = Soak(url)
        assert soak.client.post("/collections", json={"name": "soak"}).status_code == 201
        with ThreadPoolExecutor(SOAK_CLIENTS) as pool:
            list(pool.map(soak.one, range(200)))  # warm-up: allocator arenas, caches, thread pools
        rss_before, fds_before = memory_status(process.pid)["VmRSS"], open_descriptors(process.pid)
        with ThreadPoolExecutor(SOAK_CLIENTS) as pool:
            list(pool.map(soak.one, range(200, 200 + SOAK_REQUESTS)))
        rss_after, fds_after = memory_status(process.pid)["VmRSS"], open_descriptors(process.pid)

        failures = {key: count for key, count in soak.statuses.items() if key[1] >= 500}
        assert failures == {}, soak.statuses
        assert sum(count for (_, status), count in soak.statuses.items() if status == 200) > SOAK_REQUESTS // 2
        assert rss_after <= rss_before * 1.10, f"RSS {rss_before >> 20} MiB -> {rss_after >> 20} MiB"
        assert fds_after <= fds_before * 1.10 + 2, f"open files {fds_before} -> {fds_after}"

        documents = {d["id"]: d for d in soak.client.get("/collections/soak/documents").json()["documents"]}
        hits = soak.client.post("/collections/soak/search", json={"query": "total", "k": 1000}).json()["results"]
        pages_found = Counter(hit["document_id"] for hit in hits)
        for index, data in enumerate(DOCUMENTS):
            document_id = hashlib.sha256(data).hexdigest()[:32]
            if soak.stored[index]:
                assert documents[document_id]["pages"] == PAGES[index]
                assert pages_found[document_id] == PAGES[index]
            else:
                assert document_id not in documents and pages_found[document_id] == 0
    finally:
        process.kill()
        process.wait()
