"""An in-process app over the fake backend (fast, deterministic) for route tests."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.engine import Engine, EngineConfig
from pagelens.models.embedder import EmbedderInfo
from pagelens.serving import EmbeddingService
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.server import REAL_KEY
from tests.conftest import encode, make_page

API_KEY = "test-key-123"
REAL_HEADERS = {"Authorization": f"Bearer {REAL_KEY}"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def fake_service(backend: FakeBackend | None = None, config: EngineConfig | None = None, **limits):
    backend = backend or FakeBackend()
    engine = Engine(backend, config or EngineConfig(max_wait_ms=1)).start()
    info = EmbedderInfo("fake/model", "fake", backend.dim, True, "cpu", "float32", "none")
    return EmbeddingService(engine, info, max_inputs_per_request=limits.get("max_inputs_per_request", 16))


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def client(backend):
    service = fake_service(backend)
    settings = Settings(model="fake/model", api_key=API_KEY, max_body_bytes=2_000_000)
    with TestClient(create_app(settings, service=service), headers=AUTH) as test_client:
        yield test_client
    service.engine.close()


def b64_page(width: int = 120, height: int = 160, seed: int = 0, image_format: str = "PNG") -> str:
    return base64.b64encode(encode(make_page(width, height, seed), image_format)).decode()
