"""Documents users have, built in the test: a PDF with a filled-in form field, an encrypted PDF,
a multi-page TIFF, and minimal office files (DOCX, ODT, and the zip layouts of PPTX, XLSX, ODP)."""

from __future__ import annotations

import io
import zipfile

from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, BooleanObject, DictionaryObject, FloatObject, NameObject, NumberObject
from pypdf.generic import TextStringObject as Text

from tests.conftest import make_page


def _name(value: str) -> NameObject:
    return NameObject(value)


def form_pdf(value: str = "Filled in by hand", *, appearance: bool = True) -> bytes:
    """A 300 x 200 point page with one AcroForm text field holding `value`: with `appearance`, its
    appearance stream is written (as viewers save a filled form); else only NeedAppearances is set."""
    writer = PdfWriter()
    writer.add_blank_page(300, 200)
    font = writer._add_object(DictionaryObject({
        _name("/Type"): _name("/Font"), _name("/Subtype"): _name("/Type1"),
        _name("/BaseFont"): _name("/Helvetica"), _name("/Encoding"): _name("/WinAnsiEncoding"),
    }))  # fmt: skip
    field = writer.add_annotation(0, DictionaryObject({
        _name("/Type"): _name("/Annot"), _name("/Subtype"): _name("/Widget"), _name("/FT"): _name("/Tx"),
        _name("/T"): Text("name"), _name("/V"): Text(value), _name("/F"): NumberObject(4),
        _name("/Rect"): ArrayObject([FloatObject(20), FloatObject(80), FloatObject(280), FloatObject(130)]),
        _name("/DA"): Text("/Helv 24 Tf 0 g"),
    }))  # fmt: skip
    writer.root_object[_name("/AcroForm")] = DictionaryObject({
        _name("/Fields"): ArrayObject([field.indirect_reference]), _name("/DA"): Text("/Helv 0 Tf 0 g"),
        _name("/NeedAppearances"): BooleanObject(not appearance),
        _name("/DR"): DictionaryObject({_name("/Font"): DictionaryObject({_name("/Helv"): font})}),
    })  # fmt: skip
    if appearance:
        writer.update_page_form_field_values(writer.pages[0], {"name": value}, auto_regenerate=False)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def encrypted(pdf: bytes, password: str, *, owner_password: str | None = None) -> bytes:
    """`pdf` encrypted (RC4-128: AES needs the `cryptography` package) with user password `password`
    ("" with an owner password: opens without one, as many 'protected' PDFs do)."""
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf)))
    writer.encrypt(password, owner_password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def multipage_tiff(sizes: list[tuple[int, int]]) -> bytes:
    """A TIFF whose frame i is a synthetic page of `sizes[i]` (seeded by i)."""
    frames = [make_page(width, height, seed=i) for i, (width, height) in enumerate(sizes)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _zip(entries: dict[str, str], *, stored_first: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in entries.items():
            compression = zipfile.ZIP_STORED if path == stored_first else zipfile.ZIP_DEFLATED
            archive.writestr(path, text, compress_type=compression)
    return buffer.getvalue()


_OOXML_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"""
_OOXML_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Target="word/document.xml"
 Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>"""
_WORD_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx(paragraphs: list[str]) -> bytes:
    """A minimal DOCX: one paragraph per entry, a page break between entries (so N entries, N pages)."""
    page_break = '<w:p><w:r><w:br w:type="page"/></w:r></w:p>'
    body = page_break.join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in paragraphs)
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_WORD_NS}"><w:body>{body}</w:body></w:document>'
    )
    return _zip({"[Content_Types].xml": _OOXML_TYPES, "_rels/.rels": _OOXML_RELS, "word/document.xml": document})


def ooxml_layout(part: str) -> bytes:
    """A zip laid out as an OOXML package with its main part under `part` ("ppt/", "xl/"): enough to sniff."""
    return _zip({"[Content_Types].xml": _OOXML_TYPES, "_rels/.rels": _OOXML_RELS, f"{part}main.xml": "<x/>"})


_ODF_NS = 'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" ' \
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'  # fmt: skip


def odf(mimetype: str = "application/vnd.oasis.opendocument.text", text: str = "An OpenDocument page") -> bytes:
    """A minimal OpenDocument file of `mimetype` (its `mimetype` entry first and stored, as ODF requires)."""
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                '</manifest:manifest>')  # fmt: skip
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODF_NS} office:version="1.2">'
               f"<office:body><office:text><text:p>{text}</text:p></office:text></office:body>"
               "</office:document-content>")  # fmt: skip
    entries = {"mimetype": mimetype, "META-INF/manifest.xml": manifest, "content.xml": content}
    return _zip(entries, stored_first="mimetype")


def pdf_page_count(data: bytes) -> int:
    return len(PdfReader(io.BytesIO(data)).pages)


def tiff_frame_sizes(data: bytes) -> list[tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        sizes = []
        for frame in range(image.n_frames):
            image.seek(frame)
            sizes.append(image.size)
        return sizes
