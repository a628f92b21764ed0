"""Mirror compaction: reopening a store whose mirror is mostly dead rows copies the live pages into
a new file, and no crash during it loses or corrupts a page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import pagelens.index.mirror as mirror_module
from pagelens.index.edge_store import MIRROR_KEY, EdgePageStore
from pagelens.index.pages import POOLED_ROWS
from pagelens.index.scoring import maxsim
from tests.index.test_store import REPO, fp16, query_like, structured_pages

TOKENS = 80
PAGES = structured_pages(18, tokens=TOKENS, seed=11)


def mirror_files(directory) -> list[str]:
    return sorted(path.name for path in (directory / "store.mirror").iterdir())


def fill_and_delete(directory) -> None:
    """Three 6-page documents, two of them deleted: 12 pages' rows dead, 6 live."""
    store = EdgePageStore(directory / "store")
    for number, name in enumerate("abc"):
        store.add_document(name, PAGES[number * 6 : (number + 1) * 6])
    store.delete_document("a")
    store.delete_document("b")
    store.close()


def assert_document_c_is_whole(store: EdgePageStore) -> None:
    """Every page of c is found, by both modes, with the exact MaxSim of its stored rows."""
    assert store.page_count() == 6
    for number in range(6):
        query = query_like(PAGES[12 + number], number)
        for mode in ("exact", "fast"):
            best = store.search(query, k=1, mode=mode)[0]
            assert (best.document_id, best.page) == ("c", number + 1), mode
            assert abs(best.score - maxsim(query, fp16(PAGES[12 + number]))) < 1e-4


@pytest.fixture(autouse=True)
def compact_small_mirrors(monkeypatch):
    monkeypatch.setattr(mirror_module, "COMPACT_MIN_DEAD_ROWS", 0)


def test_reopening_a_mostly_dead_mirror_compacts_it_and_keeps_every_page(tmp_path):
    fill_and_delete(tmp_path)
    assert mirror_files(tmp_path) == ["vectors.f16"]
    store = EdgePageStore(tmp_path / "store")
    try:
        assert store.compacted_rows_on_open == 12 * (TOKENS + POOLED_ROWS)
        assert mirror_files(tmp_path) == ["vectors.1.f16"]
        assert store.mirror.file_rows == 6 * (TOKENS + POOLED_ROWS) and store.mirror.dead_rows == 0
        payloads = [record.payload[MIRROR_KEY] for record in store._scroll(None, with_payload=True)]
        assert sorted(offset for offset, *_ in payloads) == [i * (TOKENS + POOLED_ROWS) for i in range(6)]
        assert {(rows, generation, pooled) for _, rows, generation, pooled in payloads} == {(TOKENS, 1, POOLED_ROWS)}
        assert_document_c_is_whole(store)
        store.add_document("d", PAGES[:2])  # new pages go to the new file
        assert store.search(query_like(PAGES[1], 0), k=1)[0].document_id == "d"
    finally:
        store.close()
    again = EdgePageStore(tmp_path / "store")
    try:
        assert again.compacted_rows_on_open == 0 and again.recopied_on_open == 0
        assert again.page_count() == 8 and mirror_files(tmp_path) == ["vectors.1.f16"]
    finally:
        again.close()


COMPACT_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    import pagelens.index.mirror as mirror_module
    from pagelens.index.edge_store import EdgePageStore
    mirror_module.COMPACT_MIN_DEAD_ROWS = 0
    original = EdgePageStore._record_locations
    def record_half_and_die(self, moved):
        original(self, dict(list(moved.items())[: len(moved) // 2]))  # half the payloads point at the new file
        print("half-recorded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    EdgePageStore._record_locations = record_half_and_die
    EdgePageStore(sys.argv[1])
    """
)


def test_a_compaction_killed_half_way_loses_no_page(tmp_path):
    fill_and_delete(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", COMPACT_AND_DIE, str(tmp_path / "store")], capture_output=True, text=True, cwd=REPO
    )
    assert child.returncode == -signal.SIGKILL and "half-recorded" in child.stdout, child.stderr
    assert mirror_files(tmp_path) == ["vectors.1.f16", "vectors.f16"]  # pages live in both
    store = EdgePageStore(tmp_path / "store")  # compacts again, from both files
    try:
        assert store.recopied_on_open == 0  # nothing was unreadable
        assert mirror_files(tmp_path) == ["vectors.2.f16"]
        assert_document_c_is_whole(store)
    finally:
        store.close()


def test_a_file_no_page_uses_is_deleted_at_open(tmp_path):
    fill_and_delete(tmp_path)
    EdgePageStore(tmp_path / "store").close()  # compacted into vectors.1.f16
    (tmp_path / "store.mirror" / "vectors.f16").write_bytes(os.urandom(256 * 10))  # as if its unlink was lost
    store = EdgePageStore(tmp_path / "store")
    try:
        assert mirror_files(tmp_path) == ["vectors.1.f16"] and store.compacted_rows_on_open == 0
        assert_document_c_is_whole(store)
    finally:
        store.close()


def test_a_mirror_with_few_dead_rows_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(mirror_module, "COMPACT_MIN_DEAD_ROWS", 1 << 16)
    fill_and_delete(tmp_path)
    store = EdgePageStore(tmp_path / "store")
    try:
        assert store.compacted_rows_on_open == 0 and mirror_files(tmp_path) == ["vectors.f16"]
        assert store.mirror.dead_rows == 12 * (TOKENS + POOLED_ROWS)
        assert_document_c_is_whole(store)
    finally:
        store.close()


def test_an_ingest_to_resume_keeps_its_rows_through_the_open_that_would_compact(tmp_path):
    """The files are the only copy of a page's vectors, and a compaction copies published pages
    only: an interrupted ingest kept for resuming defers it, and resumes with its stored pages."""
    fill_and_delete(tmp_path)  # enough dead rows to compact
    store = EdgePageStore(tmp_path / "store")  # compacts now
    interrupted = (page for page in PAGES[:5])

    def stop_after_three():
        for number, page in enumerate(interrupted):
            if number == 3:
                raise RuntimeError("killed")
            yield page

    with pytest.raises(RuntimeError):
        store.add_document("d", stop_after_three())
    store.delete_document("c")  # dead rows again
    store.close()
    store = EdgePageStore(tmp_path / "store", keep_incomplete=["d"])
    try:
        assert store.compacted_rows_on_open == 0 and store.stored_pages("d") == 3
        assert store.add_document("d", PAGES[3:5], first_page=4) == 5
        for number, page in store.iter_pages("d"):
            assert (page == fp16(PAGES[number - 1])).all()
    finally:
        store.close()
    again = EdgePageStore(tmp_path / "store")  # nothing to resume: the deferred compaction runs
    try:
        assert again.compacted_rows_on_open > 0 and again.page_count("d") == 5
        best = again.search(query_like(PAGES[1], 1), k=1)[0]
        assert (best.document_id, best.page) == ("d", 2)
    finally:
        again.close()
