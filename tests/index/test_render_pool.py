"""The PDF render workers (index/render_pool.py): a per-page time limit, crashes and cancellation
cost only a worker, documents render side by side, broken page trees are 422s naming the page."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import pytest

from pagelens.errors import UnprocessableDocument
from pagelens.index.collections import Collections
from pagelens.index.pdf import RenderCancelled, RenderPool, count_pages, open_document, render_pages
from tests.index.hostile_pdfs import broken_page_trees, slow_pdf
from tests.index.test_collection import embed
from tests.index.test_pdf import make_pdf

LIMIT = 1.5  # seconds a page; the slow PDF's page 2 needs ~45 s


@pytest.fixture
def pool():
    with RenderPool(workers=2, page_timeout=LIMIT) as opened:
        yield opened


def workers(pool: RenderPool) -> list:
    """The pool's running workers, idle or busy."""
    with pool._changed:
        return [worker for worker in (*pool._idle, *pool._busy) if worker is not None]


def busy_worker(pool: RenderPool, *, deadline: float = 10.0):
    """The one worker rendering right now (waits until one is)."""
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        with pool._changed:
            if pool._busy:
                return next(iter(pool._busy))
        time.sleep(0.01)
    raise AssertionError("no worker became busy")


def in_thread(function):
    """Run `function` on a thread: `(thread, outcome)`, outcome["result"] or outcome["error"] once it ends."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_page_over_the_time_limit_is_a_422_naming_it_and_its_worker_is_replaced(pool):
    with open_document(slow_pdf(), renderer=pool) as document:
        assert document.pages == 2 and document.page_image(1, dpi=36).size == (100, 150)
        (holder,) = [worker for worker in workers(pool) if worker.documents]
        started = time.monotonic()
        with pytest.raises(UnprocessableDocument, match=r"^page 2 took longer than 1.5 s to render$"):
            document.page_image(2, dpi=36)
        elapsed = time.monotonic() - started
    assert LIMIT <= elapsed < LIMIT + 1.0
    assert holder.process.poll() == -signal.SIGKILL and holder not in workers(pool)
    assert count_pages(make_pdf(3), renderer=pool) == 3, "the pool renders on with the workers it has left"


def test_a_worker_crashing_mid_page_is_a_422_naming_the_page(pool):
    with open_document(slow_pdf(), renderer=pool) as document:
        thread, outcome = in_thread(lambda: document.page_image(2, dpi=36))
        worker = busy_worker(pool)
        time.sleep(0.2)  # inside PDFium by now
        os.kill(worker.process.pid, signal.SIGSEGV)
        thread.join(timeout=5)
    error = outcome["error"]
    assert isinstance(error, UnprocessableDocument) and error.http_status == 422
    assert str(error) == "page 2 could not be rendered: the PDF renderer crashed (killed by SIGSEGV)"
    with open_document(make_pdf(2), renderer=pool) as document:
        assert document.page_image(2, dpi=36).size == (105, 150)


def test_a_cancelled_render_stops_at_once_and_kills_its_worker():
    cancel = threading.Event()
    with RenderPool(workers=2, page_timeout=60) as pool, open_document(slow_pdf(), renderer=pool) as document:
        pages = document.batches(dpi=36, cancel=cancel)
        thread, outcome = in_thread(lambda: list(pages))
        worker = busy_worker(pool)
        time.sleep(0.3)
        cancelled = time.monotonic()
        cancel.set()
        thread.join(timeout=5)
        assert isinstance(outcome.get("error"), RenderCancelled)
        assert time.monotonic() - cancelled < 0.5
        assert worker.process.poll() == -signal.SIGKILL
        with pytest.raises(RenderCancelled):
            next(document.batches(dpi=36, cancel=cancel))  # a set event stops the next page before it starts


def test_abandoning_an_ingest_mid_page_stops_it_and_stores_nothing(tmp_path):
    cancel = threading.Event()
    pool = RenderPool(workers=2, page_timeout=60)
    collections = Collections(tmp_path / "data", renderer=pool)
    collection = collections.create("c")
    try:
        add = lambda: collection.add(slow_pdf(), name="slow.pdf", metadata={}, embed=embed, dpi=36, cancel=cancel)  # noqa: E731
        thread, outcome = in_thread(add)
        time.sleep(1.0)  # page 1 stored, page 2 rendering
        cancel.set()
        thread.join(timeout=5)
        assert isinstance(outcome.get("error"), RenderCancelled)
        assert collection.documents() == [] and collection.store.page_count() == 0
        assert list(collection.files.iterdir()) == []
        assert all(not worker.documents for worker in workers(pool)), "the document stays open in a worker"
    finally:
        collections.close()
        pool.close()


def test_closing_a_render_generator_closes_its_document_in_the_workers(pool):
    pages = render_pages(make_pdf(6), dpi=36, batch_pages=2, renderer=pool)
    assert [page.size for page in next(pages)] == [(100, 150), (105, 150)]
    assert sum(len(worker.documents) for worker in workers(pool)) == 1
    pages.close()
    assert all(not worker.documents for worker in workers(pool))


def test_a_document_closed_inside_the_pool_lock_is_dropped_later_without_deadlock(pool):
    document = open_document(make_pdf(1), renderer=pool)
    with pool._changed:  # a finalizer closing a dropped render generator on a thread inside the pool
        document.close()
    assert sum(len(worker.documents) for worker in workers(pool)) == 1
    assert count_pages(make_pdf(2), renderer=pool) == 2  # the next call settles it
    assert all(not worker.documents for worker in workers(pool))


def test_two_documents_render_side_by_side(pool):
    with open_document(slow_pdf(), renderer=pool) as slow, open_document(make_pdf(8), renderer=pool) as quick:
        thread, outcome = in_thread(lambda: slow.page_image(2, dpi=36))
        busy_worker(pool)
        started = time.monotonic()
        sizes = [page.size for batch in quick.batches(dpi=36) for page in batch]
        took = time.monotonic() - started
        assert thread.is_alive(), "the quick document waited for the slow one"
        thread.join(timeout=LIMIT + 5)
    assert len(sizes) == 8 and took < 1.0
    assert isinstance(outcome["error"], UnprocessableDocument)


@pytest.mark.parametrize("broken", list(broken_page_trees()))
def test_a_broken_page_tree_is_a_422_naming_the_page(pool, broken):
    data, bad_page = broken_page_trees()[broken]
    with open_document(data, renderer=pool) as document:
        for page in range(1, bad_page):
            assert document.page_image(page, dpi=36).size == (100, 150)
        with pytest.raises(UnprocessableDocument, match=rf"^page {bad_page} could not be loaded .*page tree is broken"):
            document.page_image(bad_page, dpi=36)
    assert all(worker.alive for worker in workers(pool))


def test_opening_errors_are_422s_and_leave_no_document_open(pool):
    from pypdf import PdfWriter

    empty = io.BytesIO()
    PdfWriter().write(empty)
    for bad in (b"%PDF-1.7\n this is not really a pdf", empty.getvalue()):
        with pytest.raises(UnprocessableDocument, match="corrupt or has no pages"):
            open_document(bad, renderer=pool)
    assert all(not worker.documents for worker in workers(pool))


def test_a_worker_keeps_few_documents_open_and_a_closed_pool_refuses_work():
    pool = RenderPool(workers=1, page_timeout=30)
    documents = [open_document(make_pdf(pages), renderer=pool) for pages in (1, 2, 3)]
    try:
        assert [document.pages for document in documents] == [1, 2, 3]
        (worker,) = workers(pool)
        assert len(worker.documents) == 2, "the least recently used document was closed"
        assert documents[0].page_image(1, dpi=36).size == (100, 150), "and is opened again when needed"
        assert pool.opened == 4
    finally:
        for document in documents:
            document.close()
        pool.close()
    assert worker.process.poll() is not None
    with pytest.raises(Exception, match="shut down"):
        open_document(make_pdf(1), renderer=pool)


def test_a_collections_pdf_pages_render_below_the_models_cpu_priority(tmp_path):
    """Ingest renders run niced (BACKGROUND_NICENESS), so the model's threads never wait behind them;
    a pool asked for no niceness runs at its parent's priority."""
    from pagelens.index.render_pool import BACKGROUND_NICENESS

    own = os.getpriority(os.PRIO_PROCESS, 0)
    collections = Collections(tmp_path / "data")
    plain = RenderPool(workers=1)
    try:
        for renderer, expected in ((collections.renderer, min(own + BACKGROUND_NICENESS, 19)), (plain, own)):
            with open_document(make_pdf(1), renderer=renderer) as document:
                assert document.page_image(1, dpi=36).size == (100, 150)
                for worker in workers(renderer):  # the one that rendered, and a spare started meanwhile
                    assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == expected
    finally:
        collections.close()
        plain.close()
    with pytest.raises(ValueError, match="niceness"):
        RenderPool(niceness=25)
