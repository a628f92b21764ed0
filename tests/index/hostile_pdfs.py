"""Hand-written PDFs that attack the renderer: a page that is slow to draw from a 3 KB file, and
page trees that lie. Written as PDF syntax directly (objects, a cross-reference table, a trailer)."""

from __future__ import annotations

CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
PLAIN_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 300] >>"


def pdf_from_objects(objects: dict[int, bytes]) -> bytes:
    """A PDF of `objects` (numbered 1..n; 1 the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number in range(1, len(objects) + 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(dictionary: bytes, content: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(content), content)


def slow_pdf(depth: int = 7, fanout: int = 10) -> bytes:
    """Two pages: page 1 plain, page 2 drawing `fanout ** depth` small filled rectangles through
    `depth` levels of form XObjects that each call the level below `fanout` times. About 3 KB;
    PDFium needs ~5 s for depth 6 and ~45 s for depth 7 (AMD Zen 4, one core) at any DPI."""
    form = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792]"
    leaf = b"".join(b"%d %d 5 5 re f\n" % (i * 7, i * 11) for i in range(fanout))
    calls = b"".join(b"q 1 0 0 1 %d %d cm /Y Do Q\n" % (i, i) for i in range(fanout))
    first_form = 6
    top = first_form + depth - 1
    objects = {
        1: CATALOG,
        2: b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        3: PLAIN_PAGE,
        4: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /X %d 0 R >> >> "
        b"/Contents 5 0 R >>" % top,
        5: _stream(b"", b"/X Do"),
        first_form: _stream(form, leaf),
    }
    for level in range(1, depth):
        below = first_form + level - 1
        objects[first_form + level] = _stream(form + b" /Resources << /XObject << /Y %d 0 R >> >>" % below, calls)
    return pdf_from_objects(objects)


def broken_page_trees() -> dict[str, tuple[bytes, int]]:
    """PDFs whose page tree is broken, by what is wrong: `(pdf, the 1-based page PDFium cannot load)`."""
    return {
        "/Count says 3 for one page": (
            pdf_from_objects({1: CATALOG, 2: b"<< /Type /Pages /Kids [3 0 R] /Count 3 >>", 3: PLAIN_PAGE}),
            2,
        ),
        "/Kids points at a number": (
            pdf_from_objects({1: CATALOG, 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", 3: b"42"}),
            1,
        ),
        "/Kids holds its own parent": (
            pdf_from_objects({1: CATALOG, 2: b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>", 3: PLAIN_PAGE}),
            2,
        ),
    }
