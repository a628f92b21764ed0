"""Ingest jobs seen from a process that does not run them (the embedded CLI): records read without
changing them, the lock that tells whether a server runs them, and cancelling an interrupted job."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pagelens.errors import Conflict, InvalidInput, NotFound
from pagelens.service import CollectionService, JobService, jobs_running_elsewhere, stored_job, stored_jobs
from pagelens.service.jobs import JOBS_DIRECTORY, Job
from pagelens.settings import Settings

JOB_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path / "data"))


def write_job(settings: Settings, **fields) -> Job:
    job = Job(**{"id": JOB_ID, "collection": "docs", "filename": "a.pdf", "document_id": "d" * 32,
                 "metadata": {}, "durable": True, **fields})  # fmt: skip
    directory = Path(settings.data_dir) / JOBS_DIRECTORY / job.id
    directory.mkdir(parents=True)
    (directory / "job.json").write_text(json.dumps(asdict(job)))
    return job


def job_service(settings: Settings, **options) -> JobService:
    return JobService(settings, CollectionService(settings, lambda: None), **options)


def test_records_are_read_as_written_and_filtered(settings):
    assert stored_jobs(settings.data_dir) == []
    write_job(settings, state="running", pages_done=3, pages_total=9)
    (job,) = stored_jobs(settings.data_dir, collection="docs", state="running")
    assert (job.state, job.pages_done) == ("running", 3)
    assert stored_jobs(settings.data_dir, collection="other") == []
    assert stored_job(settings.data_dir, JOB_ID).pages_total == 9
    for unknown in ("f" * 32, "../x", ""):
        with pytest.raises(NotFound):
            stored_job(settings.data_dir, unknown)
    with pytest.raises(InvalidInput, match="state must be one of"):
        stored_jobs(settings.data_dir, state="paused")


def test_the_running_service_holds_the_lock_and_an_exclusive_one_is_refused(settings):
    assert not jobs_running_elsewhere(settings.data_dir)
    server = job_service(settings)
    try:
        assert jobs_running_elsewhere(settings.data_dir)
        with pytest.raises(Conflict, match="run by another process"):
            job_service(settings, exclusive=True)
    finally:
        server.close()
    assert not jobs_running_elsewhere(settings.data_dir)
    job_service(settings, exclusive=True).close()


def test_an_interrupted_durable_job_is_cancelled_without_running(settings):
    write_job(settings, state="running", pages_done=2, pages_total=5)
    jobs = job_service(settings, exclusive=True)
    try:
        assert jobs.cancel(JOB_ID).state == "cancelled"
        with pytest.raises(Conflict, match="already ended"):
            jobs.cancel(JOB_ID)
    finally:
        jobs.close()
    assert stored_job(settings.data_dir, JOB_ID).error["message"] == "cancelled by request"
