"""The embedding fan-out's body without Modal: documents split into page batches, embedded by the
tiny ColQwen2.5 checkpoint in this process, written into Qdrant (qdrant-client's local mode, or the
server PAGELENS_TEST_QDRANT_URL names: the test id says which), each document made searchable once
and whole; failed batches retried without duplicate pages."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pagelens.errors import InvalidInput, ModelMismatch, UnprocessableDocument, UnsupportedMediaType
from pagelens.service import Runtime
from pagelens.service.collections import binding_of
from pagelens.service.fanout import (
    FANOUT_OWNER,
    FanoutWorker,
    embed_batch,
    fan_out,
    open_fanout_store,
    plan_fanout,
    run_fanout,
)
from pagelens.settings import Settings
from tests.conftest import encode, make_page
from tests.index.backends import backend_params, server_client
from tests.index.test_pdf import make_pdf


@pytest.fixture(scope="module")
def runtime(tiny_model, tmp_path_factory):
    settings = Settings(
        model=str(tiny_model), device="cpu", dtype="float32", data_dir=str(tmp_path_factory.mktemp("d"))
    )
    started = Runtime(settings).start()
    yield started
    started.close()


@pytest.fixture(params=[param for param in backend_params() if param != "edge"])
def qdrant(request, tmp_path):
    """(client, collection name, backend): a fresh collection name, dropped afterwards on a server."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qdrant")) if request.param == "qdrant-local" else server_client()
    name = f"fanout_{uuid.uuid4().hex[:10]}"
    yield client, name, request.param
    if client.collection_exists(f"pagelens_{name}"):
        client.delete_collection(f"pagelens_{name}")
    client.close()


@pytest.fixture
def documents(tmp_path):
    """A 5-page PDF and a one-page PNG under tmp_path/docs."""
    root = tmp_path / "docs"
    (root / "scans").mkdir(parents=True)
    (root / "report.pdf").write_bytes(make_pdf(5))
    (root / "scans" / "page.png").write_bytes(encode(make_page(160, 200, 7)))
    return root, ["report.pdf", "scans/page.png"]


def in_process(worker, collection, *, fail=lambda batch, attempt: False):
    """A `map_batches` running each batch here, in order; `fail(batch, attempt)` makes a batch raise
    after its pages were written (a container lost once its upsert went through). Counts attempts."""
    attempts: dict[tuple[str, int], int] = {}

    def map_batches(batches):
        for batch in batches:
            key = (batch.document.document_id, batch.first)
            attempts[key] = attempts.get(key, 0) + 1
            try:
                written = worker.embed(collection, batch)
                if fail(batch, attempts[key]):
                    raise RuntimeError(f"container lost after pages {batch.first}-{batch.last}")
                yield written
            except Exception as error:
                yield error

    map_batches.attempts = attempts
    return map_batches


def counting_marks(store):
    """Record every `mark_complete(document_id, pages)` the store receives."""
    marks: list[tuple[str, int]] = []
    original = store.mark_complete

    def mark(document_id, pages):
        marks.append((document_id, pages))
        return original(document_id, pages)

    store.mark_complete = mark
    return marks


def test_plan_cuts_each_document_into_page_batches(documents):
    root, paths = documents
    plan = plan_fanout(root, paths, batch_pages=2, metadata={"team": "x"})
    assert [(doc.path, doc.name, doc.pages) for doc in plan.documents] == [
        ("report.pdf", "report.pdf", 5), ("scans/page.png", "page.png", 1)]  # fmt: skip
    assert [(b.document.name, b.first, b.last) for b in plan.batches()] == [
        ("report.pdf", 1, 2), ("report.pdf", 3, 4), ("report.pdf", 5, 5), ("page.png", 1, 1)]  # fmt: skip
    assert all(len(doc.document_id) == 32 and doc.metadata == {"team": "x"} for doc in plan.documents)


def test_plan_refuses_bad_input_naming_it(documents):
    root, paths = documents
    with pytest.raises(InvalidInput, match=r"missing\.pdf: no such file"):
        plan_fanout(root, [*paths, "missing.pdf"])
    (root / "copy.pdf").write_bytes((root / "report.pdf").read_bytes())
    with pytest.raises(InvalidInput, match=r"copy\.pdf has the same bytes as report\.pdf"):
        plan_fanout(root, [*paths, "copy.pdf"])
    with pytest.raises(InvalidInput, match="batch_pages must be between 1 and 256, got 0"):
        plan_fanout(root, paths, batch_pages=0)
    (root / "notes.txt").write_bytes(b"plain text, no document")
    with pytest.raises(UnsupportedMediaType, match=r"^notes\.txt: the upload is neither a PDF"):
        plan_fanout(root, [*paths, "notes.txt"])
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 broken")
    with pytest.raises(UnprocessableDocument, match=r"^broken\.pdf: "):
        plan_fanout(root, ["broken.pdf"])


def test_a_document_set_fans_out_into_searchable_whole_documents(runtime, qdrant, documents, tmp_path):
    client, collection, backend = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    plan = plan_fanout(root, paths, batch_pages=2, dpi=72)
    store = open_fanout_store(client, collection, worker.binding())
    marks = counting_marks(store)
    report = run_fanout(plan, store, in_process(worker, collection))
    ids = [doc.document_id for doc in plan.documents]
    assert report.completed == ids and report.failed == {} and report.pages_written == 6, backend
    assert sorted(marks) == sorted([(ids[0], 5), (ids[1], 1)]), "each document marked complete exactly once"
    assert client.count(f"pagelens_{collection}", exact=True).count == 6
    # the stored vectors are the model's for the pages rendered at the plan's dpi
    from pagelens.service import document_pages

    pdf = (root / "report.pdf").read_bytes()
    budget = runtime.info.page_pixels  # pages render within the model's budget, as an upload's do
    batches = document_pages(pdf, Settings(model="m", pdf_dpi=72), render_pixels=budget)
    rendered = [image for batch in batches for image in batch]
    expected = runtime.embed_images(rendered)
    stored = dict(store.iter_pages(ids[0]))
    assert sorted(stored) == [1, 2, 3, 4, 5]
    for number, vectors in enumerate(expected, start=1):
        np.testing.assert_allclose(stored[number].astype(np.float32), vectors, atol=2e-3)
    # a pagelens server on the same Qdrant finds the collection bound to the model, and searches it
    from pagelens.index.collections import Collections

    replica = Collections(tmp_path / "replica", qdrant=client)
    try:
        opened = replica.get(collection)
        assert opened.binding == worker.binding()
        hits = opened.search(expected[2], k=3, mode="exact", filter=None)
        assert (hits[0].document_id, hits[0].page, hits[0].name) == (ids[0], 3, "report.pdf")
    finally:
        replica.close()
    again = run_fanout(plan, store, in_process(worker, collection))
    assert again.skipped == ids and again.batches == 0 and len(marks) == 2, "a re-run skips complete documents"


def test_a_failed_batch_is_retried_without_duplicates_and_nothing_shows_until_whole(runtime, qdrant, documents):
    client, collection, _ = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    plan = plan_fanout(root, paths, batch_pages=2, dpi=72)
    store = open_fanout_store(client, collection, worker.binding())
    marks = counting_marks(store)
    seen_mid_run: list[int] = []

    def fail(batch, attempt):
        if attempt == 1 and batch.first == 3:  # pages 3-4 stored, then the container is lost
            return True
        if attempt == 2:
            seen_mid_run.append(store.page_count())  # during the retry: nothing of the PDF is searchable
        return False

    mapped = in_process(worker, collection, fail=fail)
    report = run_fanout(plan, store, mapped, retries=2)
    pdf_id = plan.documents[0].document_id
    assert mapped.attempts[(pdf_id, 3)] == 2 and report.retried == 1 and report.batches == 5
    assert seen_mid_run == [0], "pages of incomplete documents must not be searchable"
    assert report.failed == {} and sorted(marks) == sorted((doc.document_id, doc.pages) for doc in plan.documents)
    assert client.count(f"pagelens_{collection}", exact=True).count == 6, "the retried pages overwrote, not doubled"
    assert store.page_count(pdf_id) == 5


def test_a_batch_that_keeps_failing_leaves_its_document_absent_and_a_rerun_completes_it(runtime, qdrant, documents):
    client, collection, _ = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    plan = plan_fanout(root, paths, batch_pages=2, dpi=72)
    store = open_fanout_store(client, collection, worker.binding())
    marks = counting_marks(store)
    pdf, png = plan.documents
    report = run_fanout(plan, store, in_process(worker, collection, fail=lambda batch, _: batch.first == 5), retries=1)
    assert report.completed == [png.document_id] and list(report.failed) == [pdf.document_id]
    assert "pages 5-5: container lost" in report.failed[pdf.document_id]
    assert marks == [(png.document_id, 1)], "a document with a failed batch is never marked complete"
    assert store.stored_pages(pdf.document_id) == 0, "its written pages are deleted"
    assert client.count(f"pagelens_{collection}", exact=True).count == 1
    rerun = run_fanout(plan, store, in_process(worker, collection))
    assert rerun.skipped == [png.document_id] and rerun.completed == [pdf.document_id]
    assert marks[1:] == [(pdf.document_id, 5)] and store.page_count() == 6


def test_the_coordinator_purges_only_its_own_leftovers(runtime, qdrant, documents):
    from pagelens.index.qdrant_store import QdrantPageStore

    client, collection, _ = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    store = open_fanout_store(client, collection, worker.binding())
    page = runtime.embed_images([make_page(100, 120, 1)])[0]
    store.write_pages("a" * 32, [(1, page)])  # what a coordinator that died left behind
    replica = QdrantPageStore(client, f"pagelens_{collection}", owner="replica-1")
    replica.write_pages("b" * 32, [(1, page)])  # a replica's upload in flight
    report = fan_out(client, collection, worker.binding(), plan_fanout(root, paths[1:]), in_process(worker, collection))
    assert report.purged == 1 and store.stored_pages("a" * 32) == 0
    assert replica.stored_pages("b" * 32) == 1, "another owner's ingest in flight is left alone"
    assert store.owner == FANOUT_OWNER


def test_a_collection_of_another_model_is_refused(runtime, qdrant):
    from dataclasses import replace

    client, collection, _ = qdrant
    binding = binding_of(runtime.info)
    open_fanout_store(client, collection, binding)
    with pytest.raises(ModelMismatch, match="vs 'org/other'"):
        open_fanout_store(client, collection, replace(binding, model="org/other"))
    with pytest.raises(ModelMismatch, match="pool_factor None vs 3"):
        open_fanout_store(client, collection, replace(binding, pool_factor=3))
    with pytest.raises(InvalidInput, match="collection name 'a/b' must be"):
        open_fanout_store(client, "a/b", binding)


def test_a_worker_batch_renders_only_its_pages(runtime, qdrant, documents):
    client, collection, _ = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    store = open_fanout_store(client, collection, worker.binding())
    plan = plan_fanout(root, paths, batch_pages=2, dpi=72)
    middle = plan.batches()[1]
    assert embed_batch(middle, root=root, embed=runtime.embed_images, store=store) == 2
    assert store.stored_pages(middle.document.document_id) == 2 and store.page_count() == 0
    numbers = sorted(point.payload["page"] for point in client.scroll(f"pagelens_{collection}", limit=10)[0])
    assert numbers == [3, 4]


def test_a_worker_takes_batches_from_two_threads_at_once(runtime, qdrant, documents):
    """What a Modal container does with two inputs in flight: both batches' pages stored, whole."""
    from concurrent.futures import ThreadPoolExecutor

    client, collection, _ = qdrant
    root, paths = documents
    worker = FanoutWorker(runtime, client, root=root)
    plan = plan_fanout(root, paths, batch_pages=1, dpi=72)
    store = open_fanout_store(client, collection, worker.binding())
    threads: set[str] = set()

    def embed(batch):
        import threading

        threads.add(threading.current_thread().name)
        return worker.embed(collection, batch)

    with ThreadPoolExecutor(2) as pool:
        report = run_fanout(plan, store, lambda batches: list(pool.map(embed, batches)))
    assert len(threads) == 2 and report.pages_written == 6 and len(report.completed) == 2
    assert store.page_count() == 6 and client.count(f"pagelens_{collection}", exact=True).count == 6


def test_a_batch_renders_within_the_model_page_budget(runtime, qdrant, documents):
    """Pages render as an upload's ingest renders them: within `render_pixels` (the worker passes the
    model's `page_pixels`), so a page's vectors do not depend on the path it took."""
    client, collection, _ = qdrant
    root, paths = documents
    store = open_fanout_store(client, collection, binding_of(runtime.info))
    batch = plan_fanout(root, paths[:1], batch_pages=2, dpi=150).batches()[0]
    sizes: list[list[int]] = []

    def embed(images):
        sizes.append([image.width * image.height for image in images])
        return runtime.embed_images(images)

    embed_batch(batch, root=root, embed=embed, store=store)
    embed_batch(batch, root=root, embed=embed, store=store, render_pixels=50_000)
    assert min(sizes[0]) > 250_000 and max(sizes[1]) < 51_000, sizes  # the scale is rounded to whole pixels
    assert store.stored_pages(batch.document.document_id) == 2, "the second write replaced the first"
    worker = FanoutWorker(runtime, client, root=root)
    assert worker.runtime.info.page_pixels is not None
