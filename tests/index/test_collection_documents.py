"""A collection's documents (index/collection.py) on each backend: the record's fields, metadata
changes (JSON merge patch, record and payloads together, under the document's lock, finished after
a crash), the uploaded file, and the in-memory index of metadata keys that search filters check."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from datetime import UTC, datetime

import pytest

from pagelens.errors import BackendFailure, InvalidInput, NotFound
from pagelens.index.records import PENDING
from tests.conftest import encode, make_page
from tests.index import test_collection
from tests.index.test_collection import FAKE, embed
from tests.index.test_pdf import make_pdf

collections_on = test_collection.collections_on  # the fixture: opens Collections on each backend, as a restart would
QUERY = FAKE.expected(FAKE.prepare_query("revenue"))


def payload_metadata(collection, document_id: str) -> list[dict]:
    """The metadata copy in each stored page of a document, as search returns it."""
    hits = collection.search(QUERY, k=1000, mode="exact", filter=None)
    return [hit.metadata for hit in sorted(hits, key=lambda hit: hit.page) if hit.document_id == document_id]


def test_a_record_holds_size_digest_and_time_and_old_records_gain_them_on_read(collections_on):
    collection = collections_on().create("c")
    pdf = make_pdf(2)
    before = datetime.now(UTC).replace(microsecond=0)
    document_id = collection.add(pdf, name="q3.pdf", metadata={"team": "x"}, embed=embed, dpi=36)["id"]
    record = collection.document(document_id)
    assert record == {
        "id": document_id, "name": "q3.pdf", "pages": 2, "bytes": len(pdf), "sha256": hashlib.sha256(pdf).hexdigest(),
        "metadata": {"team": "x"}, "created_at": record["created_at"], "kind": "pdf", "dpi": 36,
    }  # fmt: skip
    assert before <= datetime.fromisoformat(record["created_at"]) <= datetime.now(UTC)
    assert record["created_at"].endswith("Z") and collection.documents() == [record]

    path = collection.files / f"{document_id}.json"
    old = {key: record[key] for key in ("id", "name", "pages", "metadata", "kind", "dpi")}
    path.write_text(json.dumps(old))  # as versions before these fields wrote it
    assert collection.documents()[0] | {"metadata": {}} == old | {"metadata": {}, "bytes": None, "sha256": None,
                                                                   "created_at": None}  # fmt: skip
    assert collection.document(document_id) == record | {"created_at": None}
    assert json.loads(path.read_text())["sha256"] == record["sha256"], "filled in once, then read"

    data, media_type, listed = collection.file(document_id)
    assert (data, media_type, listed["name"]) == (pdf, "application/pdf", "q3.pdf")
    png = encode(make_page(120, 160, 3))
    scan = collection.add(png, name="scan.png", metadata={}, embed=embed, dpi=36)["id"]
    assert collection.file(scan)[:2] == (png, "image/png")
    jpeg = encode(make_page(120, 160, 4), "JPEG")
    photo = collection.add(jpeg, name="s.jpg", metadata={}, embed=embed, dpi=36)["id"]
    assert collection.file(photo)[1] == "image/jpeg"
    collection.delete(scan)
    for read in (collection.document, collection.file):
        with pytest.raises(NotFound):
            read(scan)
        with pytest.raises(NotFound):
            read("../" + "a" * 30)


def test_patch_merges_into_record_and_every_page_and_keeps_filters_in_step(collections_on):
    collections = collections_on()
    collection = collections.create("c")
    document_id = collection.add(make_pdf(3), name="a.pdf", metadata={"team": "x", "year": 2020, "n": {"a": 1}},
                                 embed=embed, dpi=36)["id"]  # fmt: skip
    other = collection.add(make_pdf(1), name="b.pdf", metadata={"team": "y"}, embed=embed, dpi=36)["id"]
    changed = collection.patch_metadata(document_id, {"year": None, "n": {"b": 2}, "since": "2024-05-01"})
    expected = {"team": "x", "n": {"a": 1, "b": 2}, "since": "2024-05-01"}
    assert changed["metadata"] == expected and collection.document(document_id) == changed
    assert payload_metadata(collection, document_id) == [expected] * 3
    assert payload_metadata(collection, other) == [{"team": "y"}]
    assert PENDING not in json.loads((collection.files / f"{document_id}.json").read_text())
    hits = collection.search(QUERY, k=10, mode="exact", filter={"since": {"$gte": "2024-01-01"}})
    assert {hit.document_id for hit in hits} == {document_id}
    with pytest.raises(InvalidInput, match=r"unknown filter field\(s\) 'year'; metadata fields in 'c': n, since, team"):
        collection.search(QUERY, k=10, mode="exact", filter={"year": 2020})  # no document has it any more

    for bad, says in [([1], "not list"), ({"a b": 1}, "key 'a b'"), ({"big": "x" * 9000}, "at most 8,192")]:
        with pytest.raises(InvalidInput, match=says):
            collection.patch_metadata(document_id, bad)
    assert collection.document(document_id)["metadata"] == expected, "a refused change writes nothing"
    with pytest.raises(NotFound):
        collection.patch_metadata("0" * 32, {"a": 1})

    again = collection.add(make_pdf(3), name="a.pdf", metadata={"team": "z"}, embed=embed, dpi=36)
    assert again["created"] is False and again["metadata"] == expected, "re-uploading keeps the stored metadata"

    reopened = collections_on().get("c")  # a restart rebuilds the key index from the records
    assert {hit.document_id for hit in reopened.search(QUERY, k=10, mode="exact", filter={"team": "y"})} == {other}
    reopened.delete(other)
    with pytest.raises(InvalidInput, match=r"field\(s\) 'nothing'; metadata fields in 'c': n, since, team$"):
        reopened.search(QUERY, k=10, mode="exact", filter={"nothing": 1})
    reopened.delete(document_id)
    with pytest.raises(InvalidInput, match="metadata fields in 'c': none"):
        reopened.search(QUERY, k=10, mode="exact", filter={"team": "x"})


def test_a_change_a_crash_interrupted_is_finished_on_open(collections_on):
    collection = collections_on().create("c")
    document_id = collection.add(make_pdf(2), name="a.pdf", metadata={"v": 1}, embed=embed, dpi=36)["id"]
    path = collection.files / f"{document_id}.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"metadata": {"v": 2}, PENDING: True}))  # the crash: record written, pages not
    assert payload_metadata(collection, document_id) == [{"v": 1}] * 2

    reopened = collections_on().get("c")
    assert payload_metadata(reopened, document_id) == [{"v": 2}] * 2
    assert json.loads(path.read_text()) == record | {"metadata": {"v": 2}}, "unmarked once the pages agree"
    assert {h.document_id for h in reopened.search(QUERY, k=5, mode="exact", filter={"v": 2})} == {document_id}


def test_a_store_failing_mid_change_leaves_the_old_metadata_marked_for_the_next_open(collections_on):
    collection = collections_on().create("c")
    document_id = collection.add(make_pdf(2), name="a.pdf", metadata={"v": 1}, embed=embed, dpi=36)["id"]
    real = collection.store.set_metadata

    def fail_half_way(document_id, metadata):
        real(document_id, metadata)  # the pages changed, then the store failed to say so
        raise BackendFailure("Qdrant went away")

    collection.store.set_metadata = fail_half_way
    with pytest.raises(BackendFailure):
        collection.patch_metadata(document_id, {"v": 2})
    stored = json.loads((collection.files / f"{document_id}.json").read_text())
    assert stored["metadata"] == {"v": 1} and stored[PENDING] is True
    assert collection.document(document_id)["metadata"] == {"v": 1} and PENDING not in collection.document(document_id)
    reopened = collections_on().get("c")
    assert payload_metadata(reopened, document_id) == [{"v": 1}] * 2, "the record wins, on the old metadata"
    assert reopened.patch_metadata(document_id, {"w": 3})["metadata"] == {"v": 1, "w": 3}


def test_changes_racing_each_other_and_ingests_of_their_document_leave_record_and_pages_equal(collections_on):
    """Rounds of two changes at once, every third round also racing a fresh ingest of the document (deleted
    first); after each round the record and every page hold the same metadata. The store's writes are
    slowed at random, so that without the document's lock the two halves of the changes interleave."""
    collection = collections_on().create("c")
    pdf = make_pdf(4)
    document_id = hashlib.sha256(pdf).hexdigest()[:32]
    rng, set_metadata, errors = random.Random(0), collection.store.set_metadata, []

    def slowly(document_id, metadata):
        time.sleep(rng.random() * 0.004)
        pages = set_metadata(document_id, metadata)
        time.sleep(rng.random() * 0.004)
        return pages

    def slow_embed(images):
        time.sleep(0.01)
        return embed(images)

    def change(start: threading.Barrier, value: int) -> None:
        start.wait()
        deadline = time.monotonic() + 30
        while True:
            try:
                collection.patch_metadata(document_id, {"v": value, f"k{value % 3}": value})
                return
            except NotFound:  # the ingest has not completed (only without the lock: with it, the change waits)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)

    def ingest(start: threading.Barrier, round: int) -> None:
        start.wait()
        collection.add(pdf, name="a.pdf", metadata={"round": round}, embed=slow_embed, dpi=36)

    def run(target, *args) -> threading.Thread:
        def guarded() -> None:
            try:
                target(*args)
            except Exception as error:
                errors.append(error)

        thread = threading.Thread(target=guarded)
        thread.start()
        return thread

    collection.add(pdf, name="a.pdf", metadata={}, embed=embed, dpi=36)
    collection.store.set_metadata = slowly
    for round in range(12):
        racing_ingest = round % 3 == 0
        if racing_ingest:
            collection.delete(document_id)
        start = threading.Barrier(3 if racing_ingest else 2)
        threads = [run(change, start, 2 * round), run(change, start, 2 * round + 1)]
        if racing_ingest:
            threads.append(run(ingest, start, round))
        for thread in threads:
            thread.join()
        assert errors == []
        record = json.loads((collection.files / f"{document_id}.json").read_text())
        assert PENDING not in record and record["metadata"]["v"] in (2 * round, 2 * round + 1)
        assert payload_metadata(collection, document_id) == [record["metadata"]] * 4, round
        assert collection.metadata_keys.names() == sorted(record["metadata"])
    assert payload_metadata(collections_on().get("c"), document_id) == [record["metadata"]] * 4
