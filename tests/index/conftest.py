"""The `store` fixture (every store test runs against each backend of tests/index/backends.py) and
`pdf_opens` (counts PDF openings)."""

from __future__ import annotations

import uuid

import pytest

from tests.index.backends import backend_params, close_store, open_store


@pytest.fixture(params=backend_params())
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend, tmp_path):
    opened = open_store(backend, tmp_path / "collection", f"pagelens_test_{uuid.uuid4().hex[:12]}")
    yield opened
    close_store(opened, drop=backend == "qdrant-server")


@pytest.fixture
def pdf_opens(monkeypatch) -> list[int]:
    """Counts PDFium document opens (one entry per `pypdfium2.PdfDocument` made)."""
    import pypdfium2

    opens: list[int] = []
    original = pypdfium2.PdfDocument

    def counting(*args, **kwargs):
        opens.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pypdfium2, "PdfDocument", counting)
    return opens
