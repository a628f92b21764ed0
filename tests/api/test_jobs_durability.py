"""The ingest-job bar of issue #14, through a real `pagelens serve` (tiny model, loopback): a
300-page PDF uploaded with `wait=false` is answered 202 within a second; its `pages_done` rises;
the server is SIGKILLed mid-job and restarted; the job resumes from the first page not stored
(the restarted server embeds only the pages that were missing), finishes, and the document has
exactly 300 pages, searchable, stored once."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx

from tests.api.server import running_server, start_server
from tests.index.test_pdf import make_pdf

KEY = "jobs-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ENV = {"PAGELENS_PDF_DPI": "36"}
PAGES = 300


def job_state(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/jobs/{job_id}", headers=HEADERS, timeout=30).json()


def items_embedded(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", headers=HEADERS, timeout=30).text
    return float(re.search(r"^pagelens_items_embedded_total (\S+)$", metrics, re.M).group(1))


def test_a_300_page_job_killed_mid_document_resumes_and_stores_it_once(tiny_model, tmp_path):
    pdf = make_pdf(PAGES)
    log = tmp_path / "server.log"
    process, url = start_server(tiny_model, api_key=KEY, log_path=log, env=ENV)
    try:
        assert httpx.post(f"{url}/collections", json={"name": "c"}, headers=HEADERS).status_code == 201
        started = time.perf_counter()
        accepted = httpx.post(f"{url}/collections/c/documents", params={"wait": "false"}, headers=HEADERS,
                              files={"file": ("big.pdf", pdf, "application/pdf")}, timeout=60)  # fmt: skip
        answered_in = time.perf_counter() - started
        assert accepted.status_code == 202, accepted.text
        assert answered_in < 1.0, f"202 after {answered_in:.2f} s"
        job_id = accepted.json()["job_id"]
        seen: list[int] = []
        deadline = time.monotonic() + 300
        while not seen or seen[-1] < 60:
            assert time.monotonic() < deadline, seen
            state = job_state(url, job_id)
            assert state["state"] in ("queued", "running"), state
            if not seen or state["pages_done"] != seen[-1]:
                seen.append(state["pages_done"])
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(seen) >= 3 and seen == sorted(seen), seen  # pages_done rose while it ran
    stored_before_kill = seen[-1]  # at least these pages were stored: progress is written after them

    with running_server(tiny_model, api_key=KEY, log_path=log, env=ENV) as url:
        deadline = time.monotonic() + 600
        while (state := job_state(url, job_id))["state"] != "done":
            assert state["state"] in ("queued", "running"), state
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["pages_done"] == state["pages_total"] == PAGES and state["created"] is True
        assert items_embedded(url) <= PAGES - stored_before_kill, "the resumed job embedded stored pages again"
        (document,) = httpx.get(f"{url}/collections/c/documents", headers=HEADERS).json()["documents"]
        assert document["id"] == state["document_id"] and document["pages"] == PAGES
        assert httpx.get(f"{url}/collections/c", headers=HEADERS).json()["pages"] == PAGES
        hits = httpx.post(f"{url}/collections/c/search", json={"query": "a page", "k": 1000}, headers=HEADERS,
                          timeout=120).json()["results"]  # fmt: skip
        assert sorted(hit["page"] for hit in hits) == list(range(1, PAGES + 1))
        fast = httpx.post(f"{url}/collections/c/search", json={"query": "a page", "k": 1000, "mode": "fast",
                          "prefetch": 1000}, headers=HEADERS, timeout=120).json()["results"]  # fmt: skip
        assert len(fast) == PAGES
