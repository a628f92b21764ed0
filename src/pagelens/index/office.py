"""Office documents (DOCX, PPTX, XLSX, ODT, ODP, ODS) converted to PDF by LibreOffice.

`office_format(data)` sniffs the bytes (never the file name): an OOXML package is a zip holding
`[Content_Types].xml` and its main part under `word/`, `ppt/` or `xl/`; an OpenDocument file is a
zip whose `mimetype` entry names its type. `OfficeConverter.convert` runs

    soffice --headless --convert-to pdf --outdir <tmp> <tmp>/document.<ext>

with a fresh LibreOffice profile in its own temporary directory (concurrent conversions never
share one; a fresh profile costs ~0.2 s of a ~2.6 s conversion on these machines), an environment
of its own (HOME and TMPDIR in that directory, the system PATH: none of the server's variables, so
no key reaches a process reading an untrusted file) and a time limit: past it, or once `cancel`
is set, the whole process group is killed. Without `soffice` on
the PATH the upload is refused, `UnsupportedMediaType` (415), saying what to install.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from pagelens.errors import UnprocessableDocument, UnsupportedMediaType
from pagelens.index.render_pool import RenderCancelled

__all__ = ["DEFAULT_OFFICE_TIMEOUT", "OFFICE_FORMATS", "OfficeConverter", "office_format"]

DEFAULT_OFFICE_TIMEOUT = 120.0
POLL_SECONDS = 0.05  # how often a waiting conversion looks at its deadline and cancel event
OFFICE_FORMATS = ("docx", "pptx", "xlsx", "odt", "odp", "ods")
_OOXML_PARTS = {"word/": "docx", "ppt/": "pptx", "xl/": "xlsx"}
_ODF_TYPES = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.presentation": "odp",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
}
INSTALL_HINT = (
    "install LibreOffice on the server (Debian/Ubuntu: apt-get install --no-install-recommends "
    "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui) or run the pagelens "
    "Docker image, which has it; or convert the file to PDF yourself"
)


def office_format(data: bytes) -> str | None:
    """'docx', 'pptx', 'xlsx', 'odt', 'odp' or 'ods' from the bytes; None for anything else."""
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                with archive.open("mimetype") as entry:
                    return _ODF_TYPES.get(entry.read(100).strip())
            if "[Content_Types].xml" in names:
                found = (kind for part, kind in _OOXML_PARTS.items() if any(n.startswith(part) for n in names))
                return next(found, None)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return None  # a broken zip is no office document; the caller says what it accepts
    return None


class OfficeConverter:
    """Converts office documents to PDF with `command` (LibreOffice's `soffice`), `timeout` s each."""

    def __init__(self, *, command: str = "soffice", timeout: float = DEFAULT_OFFICE_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("an office conversion needs a positive time limit")
        self.command = command
        self.timeout = timeout

    def convert(self, data: bytes, kind: str, *, cancel: threading.Event | None = None) -> bytes:
        """The PDF LibreOffice makes of `data` (an office document of format `kind`).
        UnsupportedMediaType (415) without LibreOffice; UnprocessableDocument (422) when it fails or
        outlasts the time limit; RenderCancelled (index/render_pool.py) once `cancel` is set."""
        label = kind.upper()
        executable = self.check_available(kind)
        with tempfile.TemporaryDirectory(prefix="pagelens-office-") as scratch:
            folder = Path(scratch)
            source, output = folder / f"document.{kind}", folder / "pdf"
            source.write_bytes(data)
            command = [
                executable, "--headless", "--norestore", "--nologo", "--nodefault", "--nolockcheck",
                f"-env:UserInstallation={(folder / 'profile').as_uri()}",
                "--convert-to", "pdf", "--outdir", str(output), str(source),
            ]  # fmt: skip
            with open(folder / "log", "wb") as log:
                environment = {"HOME": scratch, "TMPDIR": scratch, "PATH": os.defpath, "LANG": "C.UTF-8"}
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=folder,
                                           env=environment, start_new_session=True)  # fmt: skip
                self._wait(process, label, cancel)
            converted = output / "document.pdf"
            if process.returncode != 0 or not converted.is_file() or converted.stat().st_size == 0:
                said = (folder / "log").read_bytes().decode(errors="replace").strip().splitlines()
                detail = f": {said[-1][:200]}" if said else ""
                status = f"exit status {process.returncode}{detail}"
                raise UnprocessableDocument(f"LibreOffice could not convert the {label} document to PDF ({status})")
            return converted.read_bytes()

    def check_available(self, kind: str) -> str:
        """The path of `command`; UnsupportedMediaType (415) naming what to install when it is missing."""
        executable = shutil.which(self.command)
        if executable is None:
            missing = f"`{self.command}` is not on the server's PATH"
            raise UnsupportedMediaType(
                f"the upload is a {kind.upper()} document; converting it to PDF needs LibreOffice ({missing}): "
                f"{INSTALL_HINT}"
            )
        return executable

    def _wait(self, process: subprocess.Popen, label: str, cancel: threading.Event | None) -> None:
        """Wait for `process`; kill its whole group (soffice starts soffice.bin) past the time limit or on cancel."""
        deadline = time.monotonic() + self.timeout
        try:
            while process.poll() is None:
                if cancel is not None and cancel.is_set():
                    raise RenderCancelled("cancelled while converting an office document")
                if time.monotonic() > deadline:
                    took = f"took longer than {self.timeout:g} s"
                    raise UnprocessableDocument(f"converting the {label} document to PDF {took}")
                time.sleep(POLL_SECONDS)
        finally:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill what is left of `process`'s session (its own, from start_new_session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone: all of it exited
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
