"""Ingest jobs: every upload is a job that renders, embeds and stores one document in the
background, survives a restart of the server, and can be watched or cancelled.

    queued -> running -> done | failed | cancelled

A job lives in `<data_dir>/_jobs/<id>/`: `job.json` (its state, replaced atomically at every
change) and, until it ends, `upload` (the uploaded bytes, written as they arrive). `submit` checks
what can be checked at once (the collection, its model, the file's kind, that it opens, the page
limit) and only then queues the job, so a bad upload is an immediate 4xx, never a failed job.

Durable jobs (`wait=false` uploads) resume when the server restarts: the collection keeps the pages
an interrupted job stored (`CollectionService.resumable`) and the ingest continues from the first
page not stored, so the document is stored exactly once. A job whose client waits for it
(`wait=true`, the default) is not resumed after a restart (its client is gone; it failed, and
what it stored is purged). A password is never written anywhere: an encrypted PDF's job cannot
resume after a restart and fails saying so. Cancelling a job, or deleting its collection, stops
it within a page and leaves nothing of its document stored. Finished jobs are forgotten after
`job_retention_hours`.

The process running the jobs holds an advisory lock on `<data_dir>/_jobs/.lock` (POSIX `flock`),
so another process (the embedded CLI) can tell whether jobs it reads are being run: `stored_jobs`
reads the records without changing them, and only a `JobService(exclusive=True)`, which refuses
to start while a server holds the lock, may cancel them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from pagelens.errors import Conflict, InvalidInput, NotFound, PagelensError, error_classes
from pagelens.index.files import write_atomically
from pagelens.service.collections import CollectionService

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs held elsewhere are not detected
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

JOBS_DIRECTORY = "_jobs"  # never a collection name: those start with a letter or digit
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
COPY_CHUNK = 1 << 20
CANCELLED = {"type": "conflict", "message": "the ingest job was cancelled"}
PROGRESS_SECONDS = 1.0  # pages_done is written to disk at most this often (and at every batch end)
LOCK_FILE = ".lock"
JOB_ID = re.compile(r"[0-9a-f]{32}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One upload's ingest. `error` is `{"type", "message"}` once failed or cancelled."""

    id: str
    collection: str
    filename: str
    document_id: str
    metadata: dict[str, Any]
    durable: bool
    encrypted: bool = False
    state: str = "queued"
    pages_done: int = 0
    pages_total: int | None = None
    created: bool | None = None
    error: dict[str, str] | None = None
    created_at: str = field(default_factory=now)
    finished_at: str | None = None

    def public(self) -> dict[str, Any]:
        """What the API shows of the job."""
        return {key: value for key, value in asdict(self).items() if key not in ("metadata", "durable", "encrypted")}


class JobService:
    """The ingest jobs of one runtime, run `settings.ingest_workers` at a time."""

    def __init__(self, settings: Any, collections: CollectionService, *, exclusive: bool = False) -> None:
        """Load the jobs under `settings.data_dir`, holding their lock. `exclusive`: `Conflict` when
        another process holds it (a server runs them); else that is only logged."""
        self.settings = settings
        self.collections = collections
        self.root = Path(settings.data_dir) / JOBS_DIRECTORY
        self.root.mkdir(parents=True, exist_ok=True)
        self._held = _hold_lock(self.root)
        if self._held is None:
            if exclusive:
                raise Conflict(
                    f"the ingest jobs in {settings.data_dir} are run by another process (a running pagelens "
                    "serve?); go through that server (--url)"
                )
            log.warning("another process runs ingest jobs in %s too; each may fail the other's", settings.data_dir)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._passwords: dict[str, str] = {}  # in memory only, for the life of the job
        self._written_at: dict[str, float] = {}
        self._cancel_reasons: dict[str, dict[str, str]] = {}  # job -> the error a cancelled job ends with
        self._closing = False
        self._pool = ThreadPoolExecutor(settings.ingest_workers, thread_name_prefix="pagelens-job")
        self._load()
        collections.resumable = self.resumable
        collections.on_delete = self.cancel_collection

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        """Read every job record; forget finished jobs past their retention; a job a restart
        interrupted is failed unless it is durable (then it is queued again by `start`)."""
        cutoff = time.time() - self.settings.job_retention_hours * 3600
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir():
                continue  # the lock file
            path = directory / "job.json"
            if not path.exists():  # a submit the server died in before the job existed (no 202 was sent)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            try:
                job = _read_job(path)
            except (OSError, ValueError, TypeError) as error:
                log.error("ingest job record %s is unreadable (%s); it is left out", path, error)
                continue
            if job.state in FINISHED:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
            elif not job.durable or job.encrypted:
                lost = "its client's connection" if not job.durable else "its password, which is never kept,"
                message = f"the server restarted during the ingest and {lost} did not survive; upload the file again"
                self._finish(job, "failed", error={"type": "interrupted", "message": message})
            self._jobs[job.id] = job

    def _save(self, job: Job) -> None:
        write_atomically(self.root / job.id / "job.json", json.dumps(asdict(job)).encode())
        self._written_at[job.id] = time.monotonic()

    def _finish(self, job: Job, state: str, *, error: dict[str, str] | None = None) -> None:
        job.state, job.error, job.finished_at = state, error, now()
        self._save(job)
        (self.root / job.id / "upload").unlink(missing_ok=True)
        self._passwords.pop(job.id, None)

    def resumable(self, collection: str) -> set[str]:
        """Documents of `collection` whose durable jobs have not finished: their stored pages stay."""
        with self._lock:
            return {job.document_id for job in self._jobs.values()
                    if job.collection == collection and job.durable and job.state not in FINISHED}  # fmt: skip

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Queue again the durable jobs a restart interrupted (once the model is running)."""
        with self._lock:
            waiting = [job for job in self._jobs.values() if job.state not in FINISHED]
        for job in sorted(waiting, key=lambda job: job.created_at):
            log.info("resuming ingest job %s (%s into %r)", job.id, job.filename, job.collection)
            self._queue(job)

    def close(self) -> None:
        """Stop taking jobs; running ones stop at their next page. Durable ones keep their stored
        pages and resume at the next start; the others fail."""
        self._closing = True
        for event in list(self._cancels.values()):
            event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._held is not None:
            self._held.close()  # releases the lock
            self._held = None

    # ------------------------------------------------------------------ submitting
    async def submit(
        self,
        collection: str,
        source: BinaryIO,
        *,
        filename: str,
        metadata: dict[str, Any],
        durable: bool,
        password: str | None = None,
    ) -> Job:
        """Check an upload (`source`, read from its start) and queue its ingest. What cannot be
        ingested is refused here (404 collection, 409 model, 415 kind, 422 unreadable, 413 pages)."""
        job_id = uuid.uuid4().hex
        directory = self.root / job_id
        directory.mkdir()
        try:
            loop = asyncio.get_running_loop()
            upload = directory / "upload"
            document_id = await loop.run_in_executor(None, self._copy_upload, source, upload)
            _kind, pages = await loop.run_in_executor(
                None, lambda: self.collections.inspect(collection, upload, password=password)
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        job = Job(id=job_id, collection=collection, filename=filename, document_id=document_id, metadata=metadata,
                  durable=durable, encrypted=password is not None, pages_total=pages)  # fmt: skip
        with self._lock:
            self._jobs[job_id] = job
            if password is not None:
                self._passwords[job_id] = password
            self._save(job)
        self._queue(job)
        return job

    @staticmethod
    def _copy_upload(source: BinaryIO, target: Path) -> str:
        """Copy the upload to `target` a chunk at a time (fsynced); its document id (sha256[:32])."""
        digest = hashlib.sha256()
        source.seek(0)
        with open(target, "wb") as out:
            while chunk := source.read(COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return digest.hexdigest()[:32]

    def _queue(self, job: Job) -> None:
        self._cancels[job.id] = threading.Event()
        self._pool.submit(self._run, job.id)

    # ------------------------------------------------------------------ running
    def _run(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs[job_id]
            cancel = self._cancels[job_id]
            if job.state in FINISHED:
                return
            if cancel.is_set():
                self._finish(job, "cancelled", error=self._cancel_reasons.get(job_id, CANCELLED))
                return
            job.state = "running"
            self._save(job)

        def progress(done: int, total: int) -> None:
            with self._lock:
                job.pages_done, job.pages_total = done, total
                if done in (0, total) or time.monotonic() - self._written_at.get(job.id, 0.0) >= PROGRESS_SECONDS:
                    self._save(job)

        try:
            record = self.collections.ingest(
                job.collection, self.root / job_id / "upload", filename=job.filename, metadata=job.metadata,
                progress=progress, cancel=cancel, password=self._passwords.get(job_id),
                keep_partial=lambda: self._suspending(job),
            )  # fmt: skip
        except BaseException as error:  # every job ends in a state, whatever went wrong
            self._fail(job, cancel, error)
            if not isinstance(error, Exception):
                raise
            return
        with self._lock:
            job.created, job.pages_done, job.pages_total = record["created"], record["pages"], record["pages"]
            self._finish(job, "done")
        self._cancels.pop(job_id, None)

    def _suspending(self, job: Job) -> bool:
        """Whether `job` stops only because the server shuts down, to resume at its next start."""
        return self._closing and job.durable and not job.encrypted

    def _fail(self, job: Job, cancel: threading.Event, error: BaseException) -> None:
        with self._lock:
            if self._suspending(job):
                job.state = "queued"
                self._save(job)
                return
            if isinstance(error, PagelensError):
                detail = {"type": error.error_type, "message": error.message}
            else:
                log.exception("ingest job %s failed", job.id, exc_info=error)
                detail = {
                    "type": "internal_error",
                    "message": f"the ingest failed unexpectedly: {type(error).__name__}",
                }
            collection_deleted = isinstance(error, NotFound) and "was deleted" in error.message
            if cancel.is_set() or collection_deleted:
                state = "cancelled"
                detail = self._cancel_reasons.get(job.id, detail if collection_deleted else CANCELLED)
            else:
                state = "failed"
            self._finish(job, state, error=detail)
            self._cancels.pop(job.id, None)

    # ------------------------------------------------------------------ reading and cancelling
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFound(f"no ingest job {job_id!r}")
        return job

    def list(self, *, collection: str | None = None, state: str | None = None) -> list[Job]:
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}, not {state!r}")
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted((job for job in jobs if (collection is None or job.collection == collection)
                       and (state is None or job.state == state)), key=lambda job: job.created_at)  # fmt: skip

    def cancel(self, job_id: str, reason: str = "cancelled by request", *, error_type: str = "conflict") -> Job:
        """Stop a queued or running job (nothing of its document stays); `Conflict` once it has ended.
        The job's `error` becomes `{"type": error_type, "message": reason}` (what a client waiting for
        it is answered: 409 by default, 404 when its collection was deleted)."""
        job = self.get(job_id)
        with self._lock:
            if job.state in FINISHED:
                raise Conflict(f"ingest job {job_id} has already ended ({job.state}); nothing to cancel")
            self._cancel_reasons[job_id] = {"type": error_type, "message": reason}
            event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            if job.state == "queued" or event is None:  # waiting, or interrupted and not resumed (yet)
                self._finish(job, "cancelled", error=self._cancel_reasons[job_id])
        return job

    def cancel_collection(self, collection: str) -> None:
        """Cancel every unfinished job of `collection` (it is being deleted)."""
        for job in self.list(collection=collection):
            if job.state not in FINISHED:
                with contextlib.suppress(Conflict):  # it ended meanwhile
                    self.cancel(job.id, reason=f"collection {collection!r} was deleted", error_type="not_found")

    async def wait(self, job_id: str, *, poll: float = 0.05) -> Job:
        """The job once it has ended."""
        job = self.get(job_id)
        while job.state not in FINISHED:
            await asyncio.sleep(poll)
        return job


def _read_job(path: Path) -> Job:
    return Job(**json.loads(path.read_text()))


def _hold_lock(root: Path) -> IO[str] | None:
    """The jobs lock of `root`, held until the returned file is closed; None when another process holds it."""
    handle = open(root / LOCK_FILE, "a")  # noqa: SIM115 (held for the life of the job service)
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def jobs_running_elsewhere(data_dir: str | Path) -> bool:
    """Whether another process (a server) runs the ingest jobs of `data_dir` now."""
    root = Path(data_dir) / JOBS_DIRECTORY
    if not root.is_dir():
        return False
    handle = _hold_lock(root)
    if handle is None:
        return True
    handle.close()
    return False


def stored_jobs(data_dir: str | Path, *, collection: str | None = None, state: str | None = None) -> list[Job]:
    """The ingest jobs recorded under `data_dir` as last written, oldest first, read without changing
    anything (for a process that does not run them: an unfinished one may be a server's, running)."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}, not {state!r}")
    root = Path(data_dir) / JOBS_DIRECTORY
    found = []
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            job = _read_job(directory / "job.json")
        except (OSError, ValueError, TypeError):
            continue  # the lock file, a job being submitted, or a record the server will report
        if (collection is None or job.collection == collection) and (state is None or job.state == state):
            found.append(job)
    return sorted(found, key=lambda job: job.created_at)


def resumable_documents(data_dir: str | Path, collection: str) -> set[str]:
    """`JobService.resumable` read from the records: the documents whose stored pages a durable job
    will resume from, so a process that does not run the jobs keeps them when it opens `collection`."""
    return {job.document_id for job in stored_jobs(data_dir, collection=collection)
            if job.durable and not job.encrypted and job.state not in FINISHED}  # fmt: skip


def stored_job(data_dir: str | Path, job_id: str) -> Job:
    """One recorded job, read as `stored_jobs` reads them; `NotFound` when there is none."""
    path = Path(data_dir) / JOBS_DIRECTORY / job_id / "job.json"
    try:
        if not JOB_ID.fullmatch(job_id):
            raise FileNotFoundError(job_id)
        return _read_job(path)
    except (OSError, ValueError, TypeError):
        raise NotFound(f"no ingest job {job_id!r}") from None


def raise_job_error(job: Job) -> None:
    """Raise a failed job's error as the typed error it was (its HTTP status with it)."""
    assert job.error is not None
    for error_class in error_classes():
        if error_class.error_type == job.error["type"]:
            raise error_class(job.error["message"])
    raise PagelensError(job.error["message"])
