"""`pagelens jobs ...` and `index add --no-wait`: a server's ingest jobs over `--url`, the same
records read embedded from its data directory while it runs, and an interrupted job no server
runs, cancelled embedded."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.client import Client
from pagelens.service.jobs import JOBS_DIRECTORY, Job
from tests.api.server import running_server
from tests.index.test_pdf import make_pdf

runner = CliRunner()
KEY = "jobs-key"


@pytest.fixture(scope="module")
def jobs_server(tiny_model, tmp_path_factory):
    """A server running one ingest at a time (so a second upload waits): `(url, data directory)`."""
    log = tmp_path_factory.mktemp("jobs-server") / "server.log"
    with running_server(tiny_model, api_key=KEY, log_path=log, env={"PAGELENS_INGEST_WORKERS": "1"}) as url:
        yield url, log.parent / "data"


def cli(*args: str, expect: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == expect, result.output
    return result


def test_no_wait_uploads_are_followed_page_by_page_and_listed(jobs_server, tmp_path):
    url, data_dir = jobs_server
    remote = ["--url", url, "--api-key", KEY]
    for name, pages in (("a.pdf", 3), ("b.pdf", 2)):
        (tmp_path / name).write_bytes(make_pdf(pages))
    files = [str(tmp_path / "a.pdf"), str(tmp_path / "b.pdf")]
    added = cli("index", "add", *files, "-c", "queued", "--no-wait", "--metadata", '{"team": "x"}', *remote)
    assert added.output.count("ingest job ") == 2, added.output
    assert f"[1/2] {files[0]}: 3/3 pages" in added.output and f"[2/2] {files[1]}: 2/2 pages" in added.output
    assert f"{files[0]}: 3 pages, added" in added.output and f"{files[1]}: 2 pages, added" in added.output

    jobs = json.loads(cli("jobs", "list", "-c", "queued", "--state", "done", "--json", *remote).stdout)["jobs"]
    assert [(job["filename"], job["pages_done"]) for job in jobs] == [("a.pdf", 3), ("b.pdf", 2)]
    assert jobs[0]["id"] in cli("jobs", "list", *remote).output
    assert json.loads(cli("jobs", "info", jobs[1]["id"], *remote).stdout)["document_id"] == jobs[1]["document_id"]
    watched = cli("jobs", "watch", jobs[0]["id"], *remote)
    assert f"ingest job {jobs[0]['id']} done: a.pdf into queued, 3 pages stored" in watched.output
    ended = cli("jobs", "cancel", jobs[0]["id"], *remote, expect=2)
    assert ended.output.strip() == f"error: ingest job {jobs[0]['id']} has already ended (done); nothing to cancel"

    # embedded, the same records are read from the server's data directory while it runs them
    local = ["--data-dir", str(data_dir)]
    listed = json.loads(cli("jobs", "list", "-c", "queued", "--json", *local).stdout)["jobs"]
    assert [job["id"] for job in listed] == [job["id"] for job in jobs]
    assert json.loads(cli("jobs", "info", jobs[0]["id"], *local).stdout)["state"] == "done"
    assert "done: a.pdf into queued" in cli("jobs", "watch", jobs[0]["id"], *local).output
    refused = cli("jobs", "cancel", jobs[0]["id"], *local, expect=2)
    assert "belongs to a pagelens server" in refused.output and "--url" in refused.output


def test_a_running_job_is_watched_and_a_queued_one_cancelled(jobs_server):
    url, _ = jobs_server
    remote = ["--url", url, "--api-key", KEY]
    with Client(url, api_key=KEY) as client:
        client.create_collection("watched")
        running = client.add_document("watched", make_pdf(20), filename="long.pdf", wait=False)
        waiting = client.add_document("watched", make_pdf(1), filename="short.pdf", wait=False)  # behind it
        cancelled = cli("jobs", "cancel", waiting["id"], *remote)
        assert cancelled.output.strip() == f"ingest job {waiting['id']}: cancelled"
        watched = cli("jobs", "watch", running["id"], *remote)
        assert "20/20 pages" in watched.output and "long.pdf into watched, 20 pages stored" in watched.output
        stopped = cli("jobs", "watch", waiting["id"], *remote, expect=1)
        assert f"ingest job {waiting['id']} cancelled: short.pdf into watched: cancelled by request" in stopped.output
        assert [d["name"] for d in client.documents("watched")] == ["long.pdf"]


def test_an_interrupted_job_no_server_runs_is_cancelled_embedded(tmp_path):
    data_dir = tmp_path / "data"
    job = Job(id="ab" * 16, collection="docs", filename="big.pdf", document_id="cd" * 16, metadata={}, durable=True,
              state="running", pages_done=4, pages_total=10)  # fmt: skip
    (data_dir / JOBS_DIRECTORY / job.id).mkdir(parents=True)
    Path(data_dir / JOBS_DIRECTORY / job.id / "job.json").write_text(json.dumps(asdict(job)))
    local = ["--data-dir", str(data_dir)]
    table = cli("jobs", "list", *local).output
    assert f"{job.id}  running" in table and "4/10" in table and "big.pdf" in table
    stuck = cli("jobs", "watch", job.id, *local, expect=2)
    assert "no server runs this data directory's jobs" in stuck.output and "4/10 pages" in stuck.output
    assert cli("jobs", "cancel", job.id, *local).output.strip() == f"ingest job {job.id}: cancelled"
    assert json.loads(cli("jobs", "info", job.id, *local).stdout)["state"] == "cancelled"
    assert cli("jobs", "info", "ef" * 16, *local, expect=2).output.strip() == f"error: no ingest job {'ef' * 16!r}"
