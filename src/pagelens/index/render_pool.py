"""A small pool of PDFium worker processes (index/render_worker.py) with a time limit per page.

    pool = RenderPool(workers=3, page_timeout=30.0)
    token = pool.new_token()                                  # one per opened document
    pages = pool.count_pages(token, data)                     # opens it in a worker (or pool.open, with
                                                              # a password: pages and a decrypted copy)
    image = pool.render_page(token, data, 0, dpi=150, max_pixels=...)   # RGB PIL image
    text = pool.page_text(token, data, 0)                     # the page's text layer
    pool.forget(token)                                        # the workers close it
    pool.close()

Each call takes one idle worker (the one that already holds the document when it is idle, else
any idle one, which is sent the bytes), so documents render side by side and a page-image request
never queues behind another document's slow page while a worker is free. No lock is held while a
page renders. A worker keeps at most `DOCUMENTS_PER_WORKER` documents open (least recently used
closed first). Workers are fresh interpreters (never a fork of this process and its torch
threads), started on first use; while any is busy, one more is started in the background when a
slot is free, so the next caller finds one ready (~0.3 s to start on these machines).

The parent waits for each page at most `page_timeout` seconds: then the worker is killed (another
starts when next needed) and the page is refused, `UnprocessableDocument` (422) naming it. A
worker that dies mid-page (PDFium crashing on a hostile file) is a 422 naming the page too. A set
`cancel` event (threading.Event) kills the worker within `POLL_SECONDS` and raises
`RenderCancelled`. Pages come back one at a time, so the memory in flight is one page per call.

`niceness` lowers the workers' CPU priority (`os.nice`). A collection's pool renders at
BACKGROUND_NICENESS: its pages are work the model's threads should not wait behind (queries and
embedding requests keep priority over ingest), and on 2 cores a page rendered at normal priority
took CPU from the forward it was meant to feed.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from PIL import Image

from pagelens.errors import BackendFailure, UnprocessableDocument
from pagelens.index.render_worker import read_frame, write_frame

log = logging.getLogger(__name__)

Source = bytes | Path  # a PDF's bytes, or the path of a file holding them (opened by the worker itself)
DEFAULT_WORKERS = 3  # two ingests (the service's ingest pool) and a page-image request at once
BACKGROUND_NICENESS = 10  # a collection's render workers: below the model's threads (nice 0)
DEFAULT_PAGE_TIMEOUT = 30.0
DOCUMENTS_PER_WORKER = 2
MAX_TEXT_BYTES = 16 << 20  # a page's text layer, read back whole
POLL_SECONDS = 0.05  # how often a waiting call looks at its cancel event
START_TIMEOUT = 60.0  # a worker's interpreter start and imports, not counted against a page


class RenderCancelled(Exception):
    """The caller's cancel event was set (its client left, its job was cancelled): nothing to answer."""


class _Gone(Exception):
    """The worker died or was killed mid-request."""


class _Worker:
    """One worker process and the tokens of the documents it holds open (least recently used first).
    The pool's lock guards `documents` and `to_drop`; the thread holding the worker does its I/O."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.documents: OrderedDict[int, None] = OrderedDict()
        self.to_drop: list[int] = []  # tokens to close with the next request

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        assert self.process.stdin is not None
        try:
            write_frame(self.process.stdin.fileno(), header, payload)
        except OSError:  # BrokenPipeError: it died
            raise _Gone from None

    def wait_reply(
        self, timeout: float, cancel: threading.Event | None, *, max_payload: int = 0
    ) -> tuple[dict[str, Any], bytearray]:
        """The reply; TimeoutError after `timeout` s; RenderCancelled once `cancel` is set; _Gone if
        it died or sent a frame over the limits (`max_payload` bytes)."""
        assert self.process.stdout is not None
        replies = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(replies, select.POLLIN)
        while True:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled("cancelled while rendering")
            left = min(POLL_SECONDS, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError
            if poller.poll(left * 1000):
                try:
                    return read_frame(replies, max_payload=max_payload)
                except (EOFError, OSError, ValueError):
                    raise _Gone from None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Close its stdin (it exits), or kill it after a second."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _exit_reason(process: subprocess.Popen) -> str:
    try:
        code = process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class RenderPool:
    """Up to `workers` PDFium processes; each page waits at most `page_timeout` seconds.

    Thread-safe: any number of threads may call it; each call holds one worker while it runs."""

    def __init__(
        self, *, workers: int = DEFAULT_WORKERS, page_timeout: float = DEFAULT_PAGE_TIMEOUT, niceness: int = 0
    ) -> None:
        if workers < 1 or page_timeout <= 0 or not 0 <= niceness <= 19:
            raise ValueError("a render pool needs at least one worker, a positive page timeout and a niceness 0..19")
        self.size = workers
        self.page_timeout = page_timeout
        self.niceness = niceness
        self.opened = 0  # documents sent to a worker to be opened (tests count these)
        self._idle: list[_Worker | None] = [None] * workers  # None: a worker to start when needed
        self._busy: set[_Worker] = set()
        self._starting = 0  # spares being started in the background
        self._forgotten: deque[int] = deque()  # closed documents' tokens, not yet taken from the workers
        # not re-entrant: `forget`, run by a finalizer on a thread inside the lock, must not change the state under it
        self._changed = threading.Condition(threading.Lock())
        self._tokens = itertools.count(1)
        self._closed = False

    # ------------------------------------------------------------------ documents
    def new_token(self) -> int:
        """A token naming one opened document in the workers."""
        return next(self._tokens)

    def count_pages(
        self, token: int, data: Source, *, password: str | None = None, cancel: threading.Event | None = None
    ) -> int:
        """Open the PDF `data` in a worker as `token`: its page count. UnprocessableDocument when
        PDFium refuses it (encrypted with no or a wrong `password`, ignored when it needs none), it has
        no pages, or opening it outlasts the page time limit."""
        return self.open(token, data, password=password, cancel=cancel)[0]

    def open(
        self, token: int, data: Source, *, password: str | None = None, cancel: threading.Event | None = None
    ) -> tuple[int, bytes | None]:
        """As `count_pages`, and the PDF saved without its encryption when it needed `password` to
        open (None otherwise): `(pages, decrypted)`."""
        request: dict[str, Any] = {"op": "open", "token": token}
        if password:
            request |= {"password": password, "decrypt": True}
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        most = 8 * size + (16 << 20) if password else 0  # a decrypted copy is about the original's size
        reply, copy = self._call(token, request, data, cancel, what="the PDF", doing="open", max_payload=most)
        if reply["pages"] < 1:
            raise UnprocessableDocument("the PDF has no pages")
        return reply["pages"], bytes(copy) if reply.get("decrypted") else None

    def render_page(
        self,
        token: int,
        data: Source,
        page: int,
        *,
        dpi: int,
        max_pixels: int,
        password: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Image.Image:
        """Page `page` (0-based) of document `token` as an RGB image at `dpi` (within `max_pixels`).
        UnprocessableDocument naming the page (1-based) when it cannot be rendered within the limit."""
        request = {"op": "render", "token": token, "page": page, "dpi": dpi, "max_pixels": max_pixels,
                   "password": password}  # fmt: skip
        most = 4 * max_pixels  # an RGB page is 3 bytes a pixel, within max_pixels
        what = f"page {page + 1}"
        reply, pixels = self._call(token, request, data, cancel, what=what, doing="render", max_payload=most)
        width, height, stride = reply["width"], reply["height"], reply["stride"]
        if not (0 < width * 3 <= stride and len(pixels) == stride * height):
            raise UnprocessableDocument(f"page {page + 1} could not be rendered: the renderer sent a bad image")
        return Image.frombuffer("RGB", (width, height), pixels, "raw", "RGB", stride, 1)

    def page_text(
        self, token: int, data: Source, page: int, *, password: str | None = None, cancel: threading.Event | None = None
    ) -> str:
        """The text layer of page `page` (0-based) of document `token` ("" for a scanned page), at most
        `MAX_TEXT_BYTES` of UTF-8; UnprocessableDocument naming the page when it cannot be read in time."""
        request = {"op": "text", "token": token, "page": page, "password": password}
        what = f"the text of page {page + 1}"
        _reply, text = self._call(token, request, data, cancel, what=what, doing="read", max_payload=MAX_TEXT_BYTES)
        return bytes(text).decode("utf-8", "replace")

    def forget(self, token: int) -> None:
        """Close document `token` in the workers holding it: now if idle, else with their next request.
        Safe from any thread at any moment (a garbage-collected render generator closes its document)."""
        self._forgotten.append(token)
        if not self._changed.acquire(blocking=False):
            return  # the thread holding the lock (maybe this one, interrupted by a finalizer) settles it
        try:
            self._settle_forgotten()
            now = []
            for worker in [w for w in self._idle if w is not None and w.to_drop]:
                self._idle.remove(worker)
                self._busy.add(worker)
                now.append((worker, worker.to_drop))
                worker.to_drop = []
        finally:
            self._changed.release()
        for worker, drops in now:
            try:
                worker.send({"op": "drop", "drop": drops})
            except _Gone:
                self._release(worker, dead=True)
            else:
                self._release(worker)

    def _settle_forgotten(self) -> None:
        """With the lock held: move forgotten tokens to the drop lists of the workers holding them."""
        while self._forgotten:
            token = self._forgotten.popleft()
            for worker in (*self._idle, *self._busy):
                if worker is not None and token in worker.documents:
                    del worker.documents[token]
                    worker.to_drop.append(token)

    # ------------------------------------------------------------------ workers
    def _call(
        self,
        token: int,
        request: dict[str, Any],
        data: Source,
        cancel: threading.Event | None,
        *,
        what: str,
        doing: str,
        max_payload: int = 0,
    ) -> tuple[dict[str, Any], bytearray]:
        """Send `request` about document `token` to an idle worker (with `data` if it does not hold
        the document yet: the bytes, or a file's path the worker opens itself) and wait for its reply
        (at most `max_payload` bytes) within the page time limit."""
        worker = self._acquire(token, cancel)
        dead = True
        try:
            with self._changed:
                self._settle_forgotten()
                opening = token not in worker.documents
                payload = data if opening and isinstance(data, bytes | bytearray) else b""
                if opening and isinstance(data, Path):
                    request["path"] = str(data)
                if opening and len(worker.documents) >= DOCUMENTS_PER_WORKER:
                    oldest, _ = worker.documents.popitem(last=False)
                    worker.to_drop.append(oldest)
                worker.documents[token] = None
                worker.documents.move_to_end(token)
                request["drop"], worker.to_drop = worker.to_drop, []
                self.opened += opening
            try:
                worker.send(request, payload)
                reply, pixels = worker.wait_reply(self.page_timeout, cancel, max_payload=max_payload)
            except TimeoutError:
                log.warning("%s took longer than %g s to %s: its worker is killed", what, self.page_timeout, doing)
                raise UnprocessableDocument(f"{what} took longer than {self.page_timeout:g} s to {doing}") from None
            except _Gone:
                reason = _exit_reason(worker.process)
                log.warning("the PDF renderer died on %s (%s)", what, reason)
                crashed = f"{what} could not be {doing}ed: the PDF renderer crashed ({reason})"
                raise UnprocessableDocument(crashed) from None
            dead = False
            if reply.get("reply") == "error":
                if not reply.get("held"):
                    with self._changed:
                        worker.documents.pop(token, None)
                raise UnprocessableDocument(str(reply.get("message")))
            return reply, pixels
        finally:
            self._release(worker, dead=dead)

    def _acquire(self, token: int, cancel: threading.Event | None) -> _Worker:
        """An idle worker, the one holding `token` if it is idle; started now if its slot is empty."""
        with self._changed:
            while True:
                if self._closed:
                    raise BackendFailure("the PDF renderer is shut down")
                if cancel is not None and cancel.is_set():
                    raise RenderCancelled("cancelled while waiting for a PDF renderer")
                if self._idle:
                    break
                self._changed.wait(POLL_SECONDS)
            for i, worker in enumerate(self._idle):
                if worker is not None and not worker.alive:  # died while idle (killed from outside)
                    log.warning("an idle PDF renderer died (%s)", _exit_reason(worker.process))
                    worker.kill()
                    self._idle[i] = None
            holders = [i for i, w in enumerate(self._idle) if w is not None and token in w.documents]
            running = [i for i, w in enumerate(self._idle) if w is not None]
            chosen = self._idle.pop((holders or running or [0])[0])
            self._keep_one_warm()
            if chosen is not None:
                self._busy.add(chosen)
                return chosen
        try:
            started = self._start(cancel)
        except BaseException:
            with self._changed:
                self._idle.append(None)
                self._changed.notify()
            raise
        with self._changed:
            self._busy.add(started)
        return started

    def _keep_one_warm(self) -> None:
        """With the lock held: start a worker in the background when none is idle and a slot is free,
        so the next caller (a page image beside an ingest) does not wait for an interpreter to start."""
        if self._closed or self._starting or any(w is not None for w in self._idle) or None not in self._idle:
            return
        self._idle.remove(None)
        self._starting += 1
        threading.Thread(target=self._start_spare, name="pagelens-pdf-spare", daemon=True).start()

    def _start_spare(self) -> None:
        try:
            worker: _Worker | None = self._start(None)
        except Exception:
            log.exception("a spare PDF renderer did not start")
            worker = None
        with self._changed:
            self._starting -= 1
            closed = self._closed
            if not closed:
                self._idle.append(worker)
                self._changed.notify()
        if closed and worker is not None:
            worker.stop()

    def _release(self, worker: _Worker, *, dead: bool = False) -> None:
        if dead:
            worker.kill()  # killed mid-request: its state is unknown
        with self._changed:
            self._settle_forgotten()
            self._busy.discard(worker)
            closed = self._closed
            if not closed:
                self._idle.append(None if dead else worker)
            self._changed.notify()
        if closed and not dead:
            worker.stop()

    def _start(self, cancel: threading.Event | None) -> _Worker:
        source = str(Path(__file__).resolve().parents[2])  # the directory holding the pagelens package
        code = (f"import sys; sys.path.insert(0, {source!r}); "
                f"from pagelens.index.render_worker import main; main({os.getpid()}, {self.niceness})")  # fmt: skip
        pipe = subprocess.PIPE
        process = subprocess.Popen([sys.executable, "-c", code], stdin=pipe, stdout=pipe, bufsize=0)
        worker = _Worker(process)
        try:
            ready, _ = worker.wait_reply(START_TIMEOUT, cancel)
        except (TimeoutError, _Gone):
            worker.kill()
            raise BackendFailure(f"a PDF renderer process did not start ({_exit_reason(process)})") from None
        except BaseException:
            worker.kill()
            raise
        if ready != {"reply": "ready"}:
            worker.kill()
            raise BackendFailure(f"a PDF renderer process started badly: {ready!r}")
        return worker

    def close(self) -> None:
        """Stop the idle workers now and the busy ones as their calls end; later calls fail."""
        with self._changed:
            self._closed = True
            idle, self._idle = [w for w in self._idle if w is not None], []
            self._changed.notify_all()
        for worker in idle:
            worker.stop()

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
