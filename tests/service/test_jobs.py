"""Ingest jobs over HTTP (in process, fake 128-d model): `wait=false` answers 202 at once and the
job runs to `done` with its progress visible (GET, list, server-sent events); cancelling, or
deleting the collection, stops it and leaves nothing stored; what cannot be ingested is refused
before any job exists; `wait=true` answers as uploads always did."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.conftest import encode, make_page
from tests.index.test_pdf import make_pdf


@contextmanager
def serving(data_dir: Path, backend: FakeBackend | None = None, **settings):
    configured = Settings(model="fake/model", api_key="test-key-123", data_dir=str(data_dir), pdf_dpi=36, **settings)
    runtime = fake_runtime(backend or FakeBackend(dim=128), settings=configured)
    try:
        with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
            yield client
    finally:
        runtime.close()


def upload(client, data: bytes, *, wait: bool | None = None, collection: str = "c", name: str = "doc.pdf"):
    params = {} if wait is None else {"wait": str(wait).lower()}
    return client.post(f"/collections/{collection}/documents", params=params,
                       files={"file": (name, data, "application/octet-stream")})  # fmt: skip


def wait_until(client, job_id: str, states: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_a_queued_job_runs_to_done_with_visible_progress(tmp_path):
    with serving(tmp_path / "data", FakeBackend(dim=128, forward_seconds=0.02)) as client:
        assert client.post("/collections", json={"name": "c"}).status_code == 201
        accepted = upload(client, make_pdf(12), wait=False)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["job_id"] == job["id"] and job["state"] in ("queued", "running") and job["pages_total"] == 12
        seen = {wait_until(client, job["id"], {"running", "done"})["pages_done"]}
        done = wait_until(client, job["id"], {"done"})
        seen.add(done["pages_done"])
        assert done["pages_done"] == done["pages_total"] == 12 and done["created"] is True and done["error"] is None
        assert done["finished_at"] and done["document_id"] == client.get("/collections/c/documents").json()[
            "documents"][0]["id"]  # fmt: skip
        hits = client.post("/collections/c/search", json={"query": "q", "k": 20}).json()["results"]
        assert sorted(hit["page"] for hit in hits) == list(range(1, 13))
        listed = client.get("/jobs", params={"collection": "c", "state": "done"}).json()["jobs"]
        assert [entry["id"] for entry in listed] == [job["id"]]
        assert client.get("/jobs", params={"collection": "other"}).json()["jobs"] == []
        assert client.get("/jobs", params={"state": "sleeping"}).status_code == 400
        again = upload(client, make_pdf(12), wait=False).json()
        assert wait_until(client, again["id"], {"done"})["created"] is False  # the same bytes: stored once
        assert not list((tmp_path / "data" / "_jobs").glob("*/upload")), "finished jobs keep no upload"


def test_the_event_stream_reports_progress_then_the_end(tmp_path):
    with serving(tmp_path / "data", FakeBackend(dim=128, forward_seconds=0.05)) as client:
        client.post("/collections", json={"name": "c"})
        job = upload(client, make_pdf(6), wait=False).json()
        with client.stream("GET", f"/jobs/{job['id']}/events", params={"poll": 0.02}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [block for block in stream.read().decode().split("\n\n") if block.startswith("event:")]
        names = [block.splitlines()[0].removeprefix("event: ") for block in events]
        payloads = [json.loads(block.splitlines()[1].removeprefix("data: ")) for block in events]
        assert names[-1] == "done" and set(names[:-1]) <= {"progress"} and len(names) >= 2
        done_counts = [payload["pages_done"] for payload in payloads]
        assert done_counts == sorted(done_counts) and done_counts[-1] == 6
        assert client.get("/jobs/nope/events").status_code == 404


def test_cancelling_a_running_job_stores_nothing_and_a_finished_one_cannot_be(tmp_path):
    with serving(tmp_path / "data", FakeBackend(dim=128, forward_seconds=0.3)) as client:
        client.post("/collections", json={"name": "c"})
        job = upload(client, make_pdf(60), wait=False).json()
        wait_until(client, job["id"], {"running"})
        time.sleep(0.5)  # some pages stored
        cancelled = client.delete(f"/jobs/{job['id']}")
        assert cancelled.status_code == 200
        final = wait_until(client, job["id"], {"cancelled"})
        assert final["error"]["type"] == "conflict" and "cancelled" in final["error"]["message"]
        assert client.get("/collections/c").json()["pages"] == 0
        assert client.get("/collections/c/documents").json()["documents"] == []
        assert client.delete(f"/jobs/{job['id']}").status_code == 409
        assert client.delete("/jobs/does-not-exist").status_code == 404
        assert client.get("/jobs/does-not-exist").status_code == 404


def test_deleting_the_collection_cancels_its_jobs(tmp_path):
    with serving(tmp_path / "data", FakeBackend(dim=128, forward_seconds=0.3)) as client:
        client.post("/collections", json={"name": "c"})
        job = upload(client, make_pdf(60), wait=False).json()
        wait_until(client, job["id"], {"running"})
        assert client.delete("/collections/c").status_code == 200
        final = wait_until(client, job["id"], {"cancelled"})
        assert final["error"] == {"type": "not_found", "message": "collection 'c' was deleted"}
        assert client.get("/collections/c").status_code == 404


def test_what_cannot_be_ingested_is_refused_before_any_job_exists(tmp_path):
    with serving(tmp_path / "data", max_document_pages=5, max_document_bytes=200_000) as client:
        client.post("/collections", json={"name": "c"})
        refusals = [
            (upload(client, make_pdf(1), wait=False, collection="missing"), 404),
            (upload(client, b"plain text, not a document", wait=False), 415),
            (upload(client, b"%PDF-1.7 broken", wait=False), 422),
            (upload(client, make_pdf(6), wait=False), 413),
            (upload(client, encode(make_page(900, 1200, 1)) + b"\0" * 250_000, wait=False), 413),
        ]
        for response, status in refusals:
            assert response.status_code == status, response.text
        assert "limit of 5" in refusals[3][0].json()["error"]["message"]
        assert client.get("/jobs").json()["jobs"] == []
        assert [p for p in (tmp_path / "data" / "_jobs").iterdir() if p.is_dir()] == []  # no job was made


def test_a_waited_upload_answers_as_before_and_is_a_job_too(tmp_path):
    with serving(tmp_path / "data") as client:
        client.post("/collections", json={"name": "c"})
        for form_wait in (None, "true"):
            data = {"wait": form_wait} if form_wait else {}
            response = client.post("/collections/c/documents", data=data,
                                   files={"file": ("a.pdf", make_pdf(3), "application/pdf")})  # fmt: skip
            assert response.status_code == 200
            assert set(response.json()) == {"id", "pages", "created", "metadata_kept"}
        assert [job["state"] for job in client.get("/jobs").json()["jobs"]] == ["done", "done"]
        queued = client.post("/collections/c/documents", data={"wait": "false"},
                             files={"file": ("b.pdf", make_pdf(2), "application/pdf")})  # fmt: skip
        assert queued.status_code == 202


@pytest.mark.parametrize("durable", [True, False])
def test_a_restart_resumes_durable_jobs_and_fails_waited_ones(tmp_path, durable):
    """A job record a killed server left `running`: at the next start a durable one runs again to
    `done`; a waited one (its client is gone) is failed, saying why."""
    from pagelens.engine import EngineConfig
    from pagelens.service import Runtime

    data_dir = tmp_path / "data"
    with serving(data_dir) as client:
        client.post("/collections", json={"name": "c"})
        job = upload(client, make_pdf(3), wait=False).json()
        wait_until(client, job["id"], {"done"})
    directory = data_dir / "_jobs" / job["id"]
    state = json.loads((directory / "job.json").read_text())
    state.update(state="running", durable=durable, pages_done=1, finished_at=None, created=None)
    (directory / "job.json").write_text(json.dumps(state))
    (directory / "upload").write_bytes(make_pdf(3))

    runtime = Runtime(Settings(model="fake/model", api_key="k", data_dir=str(data_dir), pdf_dpi=36))
    try:
        jobs = runtime.jobs  # what the server's start-up does: read the jobs, start the model, resume
        runtime.start(FakeBackend(dim=128), engine_config=EngineConfig(max_wait_ms=1))
        jobs.start()
        deadline = time.monotonic() + 60
        while jobs.get(job["id"]).state not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        final = jobs.get(job["id"])
        if durable:
            assert final.state == "done" and final.pages_done == 3
        else:
            assert final.state == "failed" and final.error["type"] == "interrupted"
            assert "connection" in final.error["message"]
        assert not (directory / "upload").exists()
    finally:
        runtime.close()
