"""Office documents: sniffed from their zip layout, converted to PDF by LibreOffice within a time
limit (a fake `soffice` tests the plumbing; the real one, when installed, the conversion), and a
415 saying what to install when it is missing."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from pagelens.errors import UnprocessableDocument, UnsupportedMediaType
from pagelens.index.collections import Collections
from pagelens.index.office import OfficeConverter, office_format
from pagelens.index.pdf import RenderCancelled, open_document, sniff_document
from tests.index.sample_documents import _zip, docx, odf, ooxml_layout, pdf_page_count
from tests.index.test_collection import embed
from tests.index.test_pdf import make_pdf

SOFFICE = shutil.which("soffice")
needs_libreoffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice (soffice) is not installed: the real conversions are not tested"
)

FAKE_SOFFICE = """#!{python}
# A stand-in for LibreOffice's soffice: records its arguments, then behaves as MODE says.
import json, os, subprocess, sys, time
from pathlib import Path
arguments = sys.argv[1:]
with open({calls!r}, "a") as calls:
    calls.write(json.dumps({{"arguments": arguments, "environment": sorted(os.environ)}}) + "\\n")
mode = {mode!r}
if mode == "slow":  # a child in the same process group (as soffice.bin is), then wait forever
    child = subprocess.Popen(["sleep", "300"])
    Path({calls!r} + ".child").write_text(str(child.pid))
    time.sleep(300)
if mode == "fails":
    print("Error: source file could not be loaded")
    sys.exit(1)
source, outdir = Path(arguments[-1]), Path(arguments[arguments.index("--outdir") + 1])
outdir.mkdir(parents=True, exist_ok=True)
(outdir / (source.stem + ".pdf")).write_bytes(Path({pdf!r}).read_bytes())
"""


def fake_soffice(folder: Path, mode: str = "converts", pages: int = 2) -> tuple[str, Path]:
    """A fake `soffice` in `folder` writing a `pages`-page PDF ("converts"), failing ("fails") or
    hanging with a child ("slow"): (its path, the file where each call's arguments are recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    pdf, calls, script = folder / "made.pdf", folder / "calls.jsonl", folder / "soffice"
    pdf.write_bytes(make_pdf(pages))
    script.write_text(FAKE_SOFFICE.format(python=sys.executable, calls=str(calls), mode=mode, pdf=str(pdf)))
    script.chmod(0o755)
    return str(script), calls


def recorded_calls(calls: Path, what: str = "arguments") -> list[list[str]]:
    """Each call's arguments (or, `what="environment"`, the names of its environment variables)."""
    return [json.loads(line)[what] for line in calls.read_text().splitlines()] if calls.exists() else []


def test_office_formats_are_sniffed_from_their_zip_layout():
    assert office_format(docx(["a"])) == "docx" and sniff_document(docx(["a"])) == "docx"
    assert office_format(ooxml_layout("ppt/")) == "pptx"
    assert office_format(ooxml_layout("xl/")) == "xlsx"
    assert office_format(odf()) == "odt"
    assert office_format(odf("application/vnd.oasis.opendocument.presentation")) == "odp"
    assert office_format(odf("application/vnd.oasis.opendocument.spreadsheet")) == "ods"
    for other in (_zip({"readme.txt": "hi"}), ooxml_layout("other/"), odf("application/epub+zip"),
                  b"PK\x03\x04 truncated", make_pdf(1)):  # fmt: skip
        assert office_format(other) is None
    with pytest.raises(UnsupportedMediaType, match="DOCX, PPTX, XLSX, ODT, ODP, ODS"):
        sniff_document(_zip({"readme.txt": "hi"}))


def test_without_libreoffice_an_office_upload_is_a_415_saying_what_to_install():
    converter = OfficeConverter(command="pagelens-no-such-soffice")
    with pytest.raises(UnsupportedMediaType) as refused:
        open_document(docx(["a"]), office=converter)
    message = str(refused.value)
    assert refused.value.http_status == 415
    assert "DOCX" in message and "LibreOffice" in message and "apt-get install" in message and "Docker" in message


def test_an_office_document_is_converted_to_pdf_with_a_fresh_profile_each_time(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGELENS_API_KEY", "not-for-libreoffice")
    command, calls = fake_soffice(tmp_path / "bin", pages=2)
    converter = OfficeConverter(command=command, timeout=30)
    for data in (docx(["a", "b"]), odf()):
        with open_document(data, office=converter) as document:
            assert (document.kind, document.pages) == ("pdf", 2) and document.data == make_pdf(2)
            assert document.source in ("docx", "odt")
            assert document.page_image(2, dpi=36).size == (105, 150)
    first, second = recorded_calls(calls)
    assert first[:2] == ["--headless", "--norestore"] and first[-5:-3] == ["--convert-to", "pdf"]
    assert Path(first[-1]).name == "document.docx" and Path(second[-1]).name == "document.odt"
    profiles = [next(a for a in call if a.startswith("-env:UserInstallation=file:///")) for call in (first, second)]
    assert profiles[0] != profiles[1]
    assert not Path(first[-1]).exists(), "the conversion's temporary files are left behind"
    assert set(recorded_calls(calls, "environment")[0]) <= {"HOME", "TMPDIR", "PATH", "LANG", "PWD", "LC_CTYPE"}


def test_a_conversion_over_the_time_limit_is_a_422_and_leaves_no_process(tmp_path):
    command, calls = fake_soffice(tmp_path / "bin", mode="slow")
    started = time.monotonic()
    with pytest.raises(UnprocessableDocument, match=r"^converting the DOCX document to PDF took longer than 1 s$"):
        open_document(docx(["a"]), office=OfficeConverter(command=command, timeout=1))
    assert time.monotonic() - started < 5
    child = int(Path(f"{calls}.child").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "soffice's child survived the time limit"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))  # a zombie is dead


def test_a_cancelled_conversion_stops_at_once(tmp_path):
    command, _ = fake_soffice(tmp_path / "bin", mode="slow")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(RenderCancelled):
        open_document(docx(["a"]), office=OfficeConverter(command=command, timeout=60), cancel=cancel)
    assert time.monotonic() - started < 3


def test_a_failed_conversion_is_a_422_with_what_libreoffice_said(tmp_path):
    command, _ = fake_soffice(tmp_path / "bin", mode="fails")
    with pytest.raises(UnprocessableDocument, match=r"could not convert the DOCX.*source file could not be loaded"):
        open_document(docx(["a"]), office=OfficeConverter(command=command))


def test_a_stored_office_document_is_not_converted_again(tmp_path):
    command, calls = fake_soffice(tmp_path / "bin", pages=3)
    collections = Collections(tmp_path / "data")
    collection = collections.create("c")
    data = docx(["one", "two", "three"])
    try:
        record = collection.add(data, name="r.docx", metadata={}, embed=embed, dpi=36,
                                office=OfficeConverter(command=command))  # fmt: skip
        assert record["created"] and record["pages"] == 3 and record["kind"] == "pdf"
        assert (collection.files / record["id"]).read_bytes() == make_pdf(3)  # the PDF is kept, not the DOCX
        assert collection.page_image(record["id"], 3).size == (110, 150)  # at the ingest dpi, 36
        missing = OfficeConverter(command="pagelens-no-such-soffice")
        again = collection.add(data, name="r.docx", metadata={}, embed=embed, dpi=36, office=missing)
        assert again == record | {"created": False} and len(recorded_calls(calls)) == 1
    finally:
        collections.close()


@needs_libreoffice
@pytest.mark.parametrize(
    ("data", "pages"), [(docx(["First page", "Second page"]), 2), (odf(text="An OpenDocument page"), 1)],
    ids=["docx", "odt"],
)  # fmt: skip
def test_libreoffice_converts_real_documents(data, pages):
    with open_document(data, office=OfficeConverter(timeout=120)) as document:
        assert document.pages == pages and pdf_page_count(document.data) == pages
        image = document.page_image(1, dpi=72)
        assert image.getextrema() != ((255, 255), (255, 255), (255, 255)), "the page is blank"
