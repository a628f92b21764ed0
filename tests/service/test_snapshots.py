"""Snapshots through the collection service: export to a path and import from a path or a file
object with no model loaded (what the embedded CLI calls), and the export stream's pipe, whose
writer is stopped when the reader leaves and whose memory stays bounded."""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pagelens.errors import Conflict, ModelNotReady, NotFound
from pagelens.index.collections import Collections
from pagelens.service import CollectionService
from pagelens.service.snapshots import AHEAD, CHUNK_BYTES, ExportAbandoned, start_writer
from pagelens.settings import Settings
from tests.index.test_snapshot import MULTI, assert_same_collection, fill


def no_model():
    raise ModelNotReady("no model in this test")


@pytest.fixture
def service(tmp_path):
    collections = Collections(tmp_path / "data")
    fill(collections, "reports", MULTI)
    service = CollectionService(Settings(data_dir=str(tmp_path / "data")), no_model, collections=collections)
    yield service
    service.close()


def test_the_service_exports_to_a_path_and_imports_from_a_path_or_a_file_without_a_model(service, tmp_path):
    manifest = asyncio.run(service.export("reports", tmp_path / "reports.tar"))
    assert manifest["documents"] == 4 and list(tmp_path.glob(".reports.tar*")) == []  # no partial file left
    summary = asyncio.run(service.import_(tmp_path / "reports.tar", "copy"))
    assert {key: summary[key] for key in ("name", "documents", "pages", "compatible")} == {
        "name": "copy", "documents": 4, "pages": 7, "compatible": True,
    }  # fmt: skip
    index = service.index()
    assert_same_collection(index.get("copy"), index.get("reports"), MULTI)
    with open(tmp_path / "reports.tar", "rb") as file:
        assert asyncio.run(service.import_(file, "second"))["pages"] == 7
    with pytest.raises(Conflict):
        asyncio.run(service.import_(tmp_path / "reports.tar"))  # its own name is taken
    with pytest.raises(NotFound):
        asyncio.run(service.export("nope", tmp_path / "nope.tar"))
    assert not (tmp_path / "nope.tar").exists()


def test_an_export_stream_yields_the_archive_and_stops_when_its_reader_leaves(service):
    async def whole() -> bytes:
        return b"".join([chunk async for chunk in await service.export_stream("reports")])

    archive = asyncio.run(whole())
    buffer = io.BytesIO()
    asyncio.run(service.export("reports", buffer))
    assert len(archive) == len(buffer.getvalue()) and archive[:100] == buffer.getvalue()[:100]

    async def missing() -> None:
        await service.export_stream("nope")

    with pytest.raises(NotFound):  # before any byte
        asyncio.run(missing())


def test_the_pipe_stops_its_writer_when_the_reader_leaves_and_bounds_what_waits():
    written, stopped, finished = [], [], threading.Event()

    def write(pipe) -> None:
        try:
            for _ in range(400):  # 25 MiB if nobody stopped it
                pipe.write(b"x" * 65536)
                written.append(65536)
        except ExportAbandoned as error:
            stopped.append(error)
            raise
        finally:
            finished.set()

    async def read_one_chunk_and_leave() -> bytes:
        chunks = start_writer(asyncio.get_running_loop(), pool, write)
        first = await anext(chunks)
        await chunks.aclose()
        await asyncio.get_running_loop().run_in_executor(None, finished.wait, 10)
        return first

    with ThreadPoolExecutor(1) as pool:
        assert len(asyncio.run(read_one_chunk_and_leave())) == CHUNK_BYTES
    assert finished.is_set() and stopped, "the writer was stopped"
    assert sum(written) <= (AHEAD + 3) * CHUNK_BYTES


def test_a_writer_failing_mid_way_ends_the_stream_with_its_error_after_what_it_wrote():
    def write(pipe) -> None:
        pipe.write(b"y" * (CHUNK_BYTES + 10))
        raise Conflict("a document was deleted meanwhile")

    async def read_all() -> list[bytes]:
        received = []
        with ThreadPoolExecutor(1) as pool, pytest.raises(Conflict, match="deleted meanwhile"):
            async for chunk in start_writer(asyncio.get_running_loop(), pool, write):
                received.append(chunk)
        return received

    assert [len(chunk) for chunk in asyncio.run(read_all())] == [CHUNK_BYTES + 10]
