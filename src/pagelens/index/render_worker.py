"""The PDFium worker process: opens PDFs from bytes and renders their pages, one request at a time.

PDFium cannot be interrupted inside a call, so it runs here, in a process of its own that the
parent (index/render_pool.py) can kill when a page takes too long or its ingest is abandoned, and
whose crash on a hostile PDF costs only this process. The parent starts it as

    python -c "...; from pagelens.index.render_worker import main; main(<parent pid>)"

(a fresh interpreter, never a fork of a process running torch threads) and talks to it over its
stdin and stdout in frames: two 8-byte big-endian lengths, a JSON object of that first length and
a payload of the second (no pickle: a worker that a hostile PDF took over can send the parent
only JSON and bytes). Requests (parent -> worker) and their replies:

    {"op": "open", "token", "password"?,
     "decrypt"?} + the PDF's bytes                              -> {"reply": "opened", "pages",
                                                                    "decrypted"?} + pdf or nothing
    {"op": "render", "token", "page", "dpi", "max_pixels",
     "password"?} + the PDF's bytes or nothing                  -> {"reply": "page", "width", "height",
                                                                    "stride"} + rgb
    {"op": "text", "token", "page", "password"?}
     + the PDF's bytes or nothing                               -> {"reply": "text"} + UTF-8 text
    {"op": "drop"}                                              -> no reply
    a request that fails                                        -> {"reply": "error", "message", "held"}

Every request carries `drop`, tokens of documents to close first. `token` names a document the
parent opened here; its bytes come with the first request for it, or instead a `path` field naming
the file that holds them (a large upload: PDFium reads the file as it needs); a request with
neither uses the document already open. `page` is 0-based; `rgb` is the page's pixels,
`height` rows of `stride` bytes (>= width * 3, rows padded to 4 bytes), each `width` uint8 RGB
triples. `held`: whether the document stays open after the error. A `password` is tried only when
PDFium cannot open the PDF without one (so it is ignored for a PDF that needs none); with
`decrypt`, a PDF that needed it comes back as `pdf`, saved without its encryption
(`decrypted` true). Form fields are drawn with their pages (PDFium's form environment).
The worker writes {"reply": "ready"} once it can take requests and exits when its stdin closes
or its parent dies.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import threading
import time
from typing import Any

PREFIX = struct.Struct("!QQ")
MAX_HEADER = 1 << 16


def write_frame(fd: int, header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one frame (a JSON-able `header` and raw `payload`) to file descriptor `fd`."""
    encoded = json.dumps(header).encode()
    for part in (PREFIX.pack(len(encoded), len(payload)) + encoded, payload):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def read_exactly(fd: int, size: int) -> bytearray:
    """`size` bytes from `fd`, read into one buffer; EOFError when it closes first."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if not count:
            raise EOFError("the other end closed the pipe")
        got += count
    return buffer


def read_frame(fd: int, *, max_payload: int | None = None) -> tuple[dict[str, Any], bytearray]:
    """The next frame from `fd`: (header, payload). EOFError when it closes; ValueError for a frame
    over the limits (a header over 64 KiB, a payload over `max_payload` bytes) or not JSON."""
    header_size, payload_size = PREFIX.unpack(read_exactly(fd, PREFIX.size))
    if header_size > MAX_HEADER or (max_payload is not None and payload_size > max_payload):
        raise ValueError(f"a frame of {header_size} + {payload_size} bytes is over the limits")
    header = json.loads(read_exactly(fd, header_size))
    if not isinstance(header, dict):
        raise ValueError("a frame's header is not a JSON object")
    return header, read_exactly(fd, payload_size)


def page_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """Pixels per point for `dpi`, lowered so the page stays within `max_pixels`."""
    scale = dpi / 72
    if width_pt * height_pt * scale * scale > max_pixels:
        scale = (max_pixels / (width_pt * height_pt)) ** 0.5
    return scale


class _Refused(Exception):
    """A document or page PDFium cannot use; the message is the parent's 422."""


class _NeedsPassword(Exception):
    """PDFium cannot open the document without (another) password."""


class _Documents:
    """The PDFs this worker holds open, by the parent's token."""

    def __init__(self) -> None:
        import pypdfium2

        self.pdfium = pypdfium2
        self.open: dict[int, Any] = {}
        self.decrypted: set[int] = set()  # tokens of documents that needed their password to open

    def drop(self, tokens: list[int]) -> None:
        for token in tokens:
            document = self.open.pop(token, None)
            self.decrypted.discard(token)
            if document is not None:
                document.close()

    def opened(self, request: dict[str, Any], data: bytearray):
        """The document `request` names: open already, or opened now from the bytes sent with it or
        from the file at its `path` (PDFium reads a file as it needs, never whole into memory)."""
        token = request["token"]
        if token not in self.open:
            if not data and "path" not in request:
                raise ValueError(f"document {token} is not open in this worker")
            source = request["path"] if "path" in request else bytes(data)
            self.open[token], needed_password = self._open(source, request.get("password"))
            if needed_password:
                self.decrypted.add(token)
        return self.open[token]

    def _open(self, data: bytes | str, password: str | None) -> tuple[Any, bool]:
        """(document, whether it needed the password). Opened without a password first, so one given
        for a PDF that needs none is ignored; with it only when PDFium asks for one."""
        needed_password = False
        try:
            document = self._load(data, None)
        except _NeedsPassword:
            if not password:
                raise _Refused("the PDF is encrypted: give its password") from None
            try:
                document = self._load(data, password)
            except _NeedsPassword:
                raise _Refused("wrong password for the encrypted PDF") from None
            needed_password = True
        # before any page loads, so filled-in form fields are drawn; without one, pages render without their values
        with contextlib.suppress(self.pdfium.PdfiumError):
            document.init_forms()
        return document, needed_password

    def _load(self, data: bytes | str, password: str | None):
        # PDFium sets its last error only when a load fails, so a PDF that loads with no pages (which
        # pypdfium2 refuses) would report an earlier document's error, maybe a password one: a failing
        # load of nothing sets it to "format error" first.
        self.pdfium.raw.FPDF_LoadMemDocument64(b"", 0, None)
        try:
            return self.pdfium.PdfDocument(data, password=password)
        except self.pdfium.PdfiumError as error:
            if error.err_code == self.pdfium.raw.FPDF_ERR_PASSWORD:
                raise _NeedsPassword from None
            if error.err_code == self.pdfium.raw.FPDF_ERR_SECURITY:
                raise _Refused("the PDF is encrypted with a security handler PDFium does not support") from None
            # PDFium refuses a PDF without pages as it refuses a broken one (its error code is not reliable then).
            raise _Refused(f"the PDF is corrupt or has no pages: {error}") from None

    def decrypted_copy(self, token: int) -> bytes:
        """The open document `token` saved without its encryption (b"" when it had none to remove)."""
        if token not in self.decrypted:
            return b""
        document = self.open[token]
        buffer = io.BytesIO()
        try:
            document.save(buffer, flags=self.pdfium.raw.FPDF_REMOVE_SECURITY)
        except Exception as error:  # PDFium raises its own error types per failure
            raise _Refused(f"the encrypted PDF could not be decrypted: {error}") from None
        return buffer.getvalue()

    def _page(self, request: dict[str, Any], data: bytearray):
        document, number = self.opened(request, data), request["page"]
        try:
            return document[number]
        except Exception as error:  # a page-tree entry that is no page, a /Count that lies
            raise _Refused(f"page {number + 1} could not be loaded ({error}); the PDF's page tree is broken") from None

    def text(self, request: dict[str, Any], data: bytearray) -> tuple[dict[str, Any], bytes]:
        """The page's text layer (empty for a scan), UTF-8."""
        page = self._page(request, data)
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
        except Exception as error:  # PDFium raises its own error types per failure
            raise _Refused(f"the text of page {request['page'] + 1} could not be read: {error}") from None
        finally:
            page.close()
        return {"reply": "text"}, text.encode("utf-8", "replace")

    def render(self, request: dict[str, Any], data: bytearray) -> tuple[dict[str, Any], bytes]:
        page, number = self._page(request, data), request["page"]
        try:
            width_pt, height_pt = page.get_size()
            scale = page_scale(width_pt, height_pt, request["dpi"], request["max_pixels"])
            bitmap = page.render(scale=scale, rev_byteorder=True, may_draw_forms=True)  # RGB rows, `stride` apart
            if bitmap.mode == "RGB":
                pixels, stride = bytes(bitmap.buffer), bitmap.stride
            else:  # not with the default options; kept should they change
                image = bitmap.to_pil().convert("RGB")
                pixels, stride = image.tobytes(), image.width * 3
        except Exception as error:  # PDFium raises its own error types per failure
            raise _Refused(f"page {number + 1} could not be rendered: {error}") from None
        finally:
            page.close()
        return {"reply": "page", "width": bitmap.width, "height": bitmap.height, "stride": stride}, pixels


def _watch_parent(parent: int) -> None:
    """Exit once `parent` is gone (this process re-parented), even in the middle of a render:
    PDFium releases the GIL while it draws, so this thread runs."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(parent: int, niceness: int = 0) -> None:
    """Serve requests on stdin/stdout until stdin closes or process `parent` dies, `niceness` below
    the parent's CPU priority."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server; it stops its workers
    if niceness:
        os.nice(niceness)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on a hostile PDF leaves no core file
    except (ImportError, ValueError, OSError):
        pass
    _watch_parent(parent)
    replies = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the frames
    documents = _Documents()
    write_frame(replies, {"reply": "ready"})
    while True:
        try:
            request, data = read_frame(0)
        except EOFError:
            return
        documents.drop(request.get("drop", []))
        payload = b""
        try:
            if request["op"] == "drop":
                continue
            if request["op"] == "open":
                reply: dict[str, Any] = {"reply": "opened", "pages": len(documents.opened(request, data))}
                if request.get("decrypt"):
                    payload = documents.decrypted_copy(request["token"])
                    reply["decrypted"] = bool(payload)
            elif request["op"] == "text":
                reply, payload = documents.text(request, data)
            else:
                reply, payload = documents.render(request, data)
        except Exception as error:  # never leave the parent without an answer
            message = str(error) if isinstance(error, _Refused) else f"{type(error).__name__}: {error}"
            reply = {"reply": "error", "message": message, "held": request.get("token") in documents.open}
        del data
        write_frame(replies, reply, payload)
