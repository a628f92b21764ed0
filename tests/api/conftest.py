"""An in-process app over the fake backend (fast, deterministic) for route tests."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.engine import EngineConfig
from pagelens.index.collections import Collections
from pagelens.service import Runtime
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.server import REAL_KEY
from tests.conftest import encode, make_page

API_KEY = "test-key-123"
REAL_HEADERS = {"Authorization": f"Bearer {REAL_KEY}"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def fake_runtime(
    backend: FakeBackend | None = None,
    config: EngineConfig | None = None,
    *,
    settings: Settings | None = None,
    collections: Collections | None = None,
    max_inputs_per_request: int = 16,
) -> Runtime:
    """A started runtime over the fake backend (engine `config`, default 1 ms batching waits)."""
    settings = (settings or Settings(model="fake/model")).model_copy(
        update={"max_inputs_per_request": max_inputs_per_request}
    )
    runtime = Runtime(settings, collections=collections)
    return runtime.start(backend or FakeBackend(), engine_config=config or EngineConfig(max_wait_ms=1))


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def client(backend):
    settings = Settings(model="fake/model", api_key=API_KEY, max_body_bytes=2_000_000)
    runtime = fake_runtime(backend, settings=settings)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as test_client:
        yield test_client
    runtime.close()


def b64_page(width: int = 120, height: int = 160, seed: int = 0, image_format: str = "PNG") -> str:
    return base64.b64encode(encode(make_page(width, height, seed), image_format)).decode()
