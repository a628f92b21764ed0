"""Plumbing between the event loop and a snapshot's blocking work (index/snapshot.py): an archive
written on a worker thread and read as chunks by an HTTP response, and an archive arriving as
chunks spooled to a file for an import.

The export side has bounded memory: the writer blocks while AHEAD chunks of CHUNK_BYTES wait for
the reader, and fails (ending the export) once the reader has gone or took none for STALL_SECONDS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

CHUNK_BYTES = 1 << 20
AHEAD = 4
STALL_SECONDS = 300.0


class ExportAbandoned(Exception):
    """The reader of an export stream went away (its client disconnected, or read nothing for too long);
    raised in the writer's thread to end the export. Never reaches a client: nobody is listening."""


class ArchivePipe:
    """A write-only file object for a worker thread whose bytes an async reader takes as chunks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(AHEAD)
        self._buffer = bytearray()
        self.abandoned = False

    # ------------------------------------------------------------ the writer's side (a worker thread)
    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_BYTES:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        """Chunks go when full (tarfile flushes after every block)."""

    def finish(self) -> None:
        """Send what is buffered, then the end."""
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self.end()

    def end(self) -> None:
        """Tell the reader nothing more comes (after a failure: what is buffered is dropped)."""
        self._send(None)

    def _send(self, item: bytes | None) -> None:
        if self.abandoned:
            raise ExportAbandoned("the export's reader has gone")
        put = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        try:
            put.result(STALL_SECONDS)
        except concurrent.futures.TimeoutError:
            put.cancel()
            self.abandoned = True
            raise ExportAbandoned(f"the export's reader took nothing for {STALL_SECONDS:g} s") from None
        if self.abandoned:
            raise ExportAbandoned("the export's reader has gone")

    # ------------------------------------------------------------ the reader's side (the event loop)
    async def chunks(self, writer: Awaitable[object]) -> AsyncIterator[bytes]:
        """The archive's chunks until the end; the writer's error, if it fails, after the chunks it
        wrote (an HTTP response then ends unfinished). Leaving early stops the writer at its next write."""
        try:
            while (chunk := await self._queue.get()) is not None:
                yield chunk
            await writer
        finally:
            self.abandoned = True
            while not self._queue.empty():  # unblock a writer waiting for room
                self._queue.get_nowait()


def start_writer(
    loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor, write: Callable[[ArchivePipe], object]
) -> AsyncIterator[bytes]:
    """Run `write(pipe)` on `pool` (the pipe finished after it) and return the chunks it writes."""
    pipe = ArchivePipe(loop)

    def run() -> object:
        try:
            result = write(pipe)
        except BaseException:
            with contextlib.suppress(ExportAbandoned):
                pipe.end()  # wake the reader, which raises this error
            raise
        pipe.finish()
        return result

    future = loop.run_in_executor(pool, run)
    future.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved even when abandoned
    return pipe.chunks(future)


async def spool(chunks: AsyncIterable[bytes], path: Path, pool: concurrent.futures.Executor) -> int:
    """Write `chunks` to a new file at `path`, CHUNK_BYTES at a time on `pool`; return the bytes written."""
    loop = asyncio.get_running_loop()
    file = await loop.run_in_executor(pool, lambda: open(path, "xb"))  # noqa: SIM115  (closed below)
    written, buffer = 0, bytearray()
    try:
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) >= CHUNK_BYTES:
                written += await loop.run_in_executor(pool, file.write, bytes(buffer))
                buffer.clear()
        written += await loop.run_in_executor(pool, file.write, bytes(buffer))
    finally:
        await loop.run_in_executor(pool, file.close)
    return written
