"""Ingest jobs: `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}` (cancel) and
`GET /jobs/{id}/events` (progress as server-sent events). The work is the job service's
(pagelens.service.jobs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from pagelens.api.openapi import error_responses
from pagelens.api.protocol import JobInfo, JobList
from pagelens.api.routes.common import Jobs

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses())
EVENT_POLL_SECONDS = 0.2  # how often an event stream looks at its job
HEARTBEAT_SECONDS = 15.0  # a comment line keeps idle proxies from closing the stream


@router.get("", response_model=None, responses={200: {"model": JobList}, **error_responses(400)})
async def list_jobs(jobs: Jobs, collection: str | None = None, state: str | None = None):
    """Every ingest job known to this server (finished ones for PAGELENS_JOB_RETENTION_HOURS), oldest first."""
    return {"jobs": [job.public() for job in jobs.list(collection=collection, state=state)]}


@router.get("/{job_id}", response_model=None, responses={200: {"model": JobInfo}, **error_responses(404)})
async def get_job(job_id: str, jobs: Jobs):
    return jobs.get(job_id).public()


@router.delete("/{job_id}", response_model=None, responses={200: {"model": JobInfo}, **error_responses(404, 409)})
async def cancel_job(job_id: str, jobs: Jobs):
    """Cancel a queued or running job: it stops within a page and nothing of its document stays
    (409 once it has ended)."""
    return jobs.cancel(job_id).public()


EVENT_STREAM = {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "`progress` events (the job as JSON) while it runs, then one named after its final state",
}


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={200: EVENT_STREAM, **error_responses(404)})
async def job_events(job_id: str, jobs: Jobs, poll: float = Query(EVENT_POLL_SECONDS, gt=0, le=10)):
    """The job's progress as server-sent events: `event: progress` with the job's JSON whenever it
    changes, and a last event named `done`, `failed` or `cancelled`; then the stream ends."""
    job = jobs.get(job_id)

    async def events() -> AsyncIterator[str]:
        last, quiet = None, 0.0
        while True:
            current = job.public()
            if current != last:
                last, quiet = current, 0.0
                name = current["state"] if current["state"] in ("done", "failed", "cancelled") else "progress"
                yield f"event: {name}\ndata: {json.dumps(current)}\n\n"
                if name != "progress":
                    return
            elif quiet >= HEARTBEAT_SECONDS:
                quiet = 0.0
                yield ": still running\n\n"
            await asyncio.sleep(poll)
            quiet += poll

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
