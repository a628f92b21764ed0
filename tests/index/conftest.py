"""The `store` fixture (every store test runs against each backend of tests/index/backends.py) and
`pdf_opens` (counts PDF openings in the render workers)."""

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


class _Opens:
    """How many documents the shared render pool sent to a worker to open since it was made."""

    def __init__(self) -> None:
        from pagelens.index.pdf import default_pool

        self.pool = default_pool()
        self.start = self.pool.opened

    def __len__(self) -> int:
        return self.pool.opened - self.start


@pytest.fixture
def pdf_opens() -> _Opens:
    """Counts PDF openings in the shared render pool's workers (`len(pdf_opens)`)."""
    return _Opens()
