"""Progress of a document's pages: a bar on a terminal, a line every few seconds elsewhere; and
following an ingest job to its end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import typer


class PageProgress:
    """One file's `(pages stored, total)` reports: a progress bar on a terminal; elsewhere (CI logs)
    a `label: N/M pages` line at the start, at the end, and at most every LINE_SECONDS between."""

    LINE_SECONDS = 10.0

    def __init__(self, label: str, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.clock = label, clock
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.bar = None
        self.last_line = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            if self.bar is None:
                self.bar = typer.progressbar(length=total, label=self.label, show_pos=True).__enter__()
            self.bar.update(done - self.bar.pos)
        elif done in (0, total) or self.clock() - self.last_line >= self.LINE_SECONDS:
            self.last_line = self.clock()
            typer.echo(f"{self.label}: {done}/{total} pages")

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def follow_job(updates: Iterable[dict], progress: PageProgress) -> dict:
    """Report each state of a job (`pages_done` of `pages_total`, once the total is known) until
    the last one, which is returned."""
    job: dict = {}
    try:
        for job in updates:
            if job.get("pages_total"):
                progress(job["pages_done"], job["pages_total"])
    finally:
        progress.finish()
    return job
