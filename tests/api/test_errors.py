"""Every error response comes from the one table: each class's status and type, the same body shape,
counted in the error metric, refusals of the middleware included."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.errors import Overloaded, error_classes
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import API_KEY, AUTH, fake_runtime

CLASSES = error_classes()


def error_count(client: TestClient, error_type: str) -> float:
    metrics = client.get("/metrics", headers=AUTH).text
    found = re.search(rf'^pagelens_errors_total{{type="{error_type}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def raising_client():
    """An app over the fake backend with `GET /raise/{type}?index=` raising that type's class, and
    `GET /crash` raising a plain exception."""
    service = fake_runtime(settings=Settings(model="fake/model", api_key=API_KEY, max_body_bytes=1000))
    app = create_app(runtime=service)
    by_type = {cls.error_type: cls for cls in CLASSES}

    def raise_error(error_type: str, index: int | None = None):
        cls = by_type[error_type]
        error = cls("it went wrong", retry_after=7.4) if cls is Overloaded else cls("it went wrong")
        raise error if index is None else error.with_index(index)

    def crash():
        raise RuntimeError("a bug, not for the user's eyes")

    app.add_api_route("/raise/{error_type}", raise_error)
    app.add_api_route("/crash", crash)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        yield client
    service.engine.close()


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_every_error_class_renders_as_its_status_and_type_and_is_counted(raising_client, cls):
    before = error_count(raising_client, cls.error_type)
    plain = raising_client.get(f"/raise/{cls.error_type}")
    assert plain.status_code == cls.http_status
    assert plain.json() == {"error": {"type": cls.error_type, "message": "it went wrong"}}
    indexed = raising_client.get(f"/raise/{cls.error_type}", params={"index": 3})
    assert indexed.status_code == cls.http_status
    assert indexed.json() == {"error": {"type": cls.error_type, "message": "it went wrong", "index": 3}}
    assert error_count(raising_client, cls.error_type) == before + 2
    assert ("retry-after" in plain.headers) == (cls is Overloaded)
    assert ("www-authenticate" in plain.headers) == (cls.http_status == 401)


def test_overloaded_carries_its_retry_after_rounded_up_to_a_whole_second(raising_client):
    assert raising_client.get("/raise/overloaded").headers["retry-after"] == "7"


def test_an_unexpected_exception_is_a_counted_500_that_hides_its_message(raising_client):
    response = raising_client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {"error": {"type": "internal_error", "message": "internal server error"}}
    assert error_count(raising_client, "internal_error") == 1


def test_routing_errors_take_their_class_and_keep_starlettes_headers(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"error": {"type": "not_found", "message": "Not Found"}}
    wrong = client.get("/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
    assert error_count(client, "not_found") == 1 and error_count(client, "method_not_allowed") == 1


def test_middleware_refusals_are_rendered_and_counted(client):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        refused = client.post("/embeddings", json={"input_type": "text", "inputs": ["x"]}, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"] == {
            "type": "unauthorized",
            "message": f"{'missing' if not headers['Authorization'] else 'wrong'} API key: "
            "send 'Authorization: Bearer <key>'",
        }
    assert error_count(client, "unauthorized") == 2

    declared = client.post("/embeddings", content=b"x" * 2_000_001, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "over the limit of 2,000,000" in declared.json()["error"]["message"]
    streamed = client.post("/embeddings", content=(b" " * 100_000 for _ in range(30)))
    assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "payload_too_large"
    assert error_count(client, "payload_too_large") == 2

    not_a_number = client.post("/embeddings", content=b"{}", headers={"Content-Length": "two"})
    assert not_a_number.status_code == 400
    assert not_a_number.json() == {"error": {"type": "invalid_input", "message": "Content-Length is not a number"}}
    assert error_count(client, "invalid_input") == 1
    assert client.post("/embeddings", json={"input_type": "text", "inputs": ["fine"]}).status_code == 200


class NaNBackend(FakeBackend):
    """Vectors with one NaN: what a model overflowing in half precision gives."""

    def expected(self, item):
        vectors = super().expected(item)
        vectors[0, 0] = np.nan
        return vectors


def test_an_output_json_cannot_carry_is_a_counted_400_and_npz_still_carries_it():
    service = fake_runtime(NaNBackend(), settings=Settings(model="fake/model", api_key=API_KEY))
    app = create_app(runtime=service)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        requests = [
            ("/embeddings", {"input_type": "text", "inputs": ["q"]}, {"Accept": "application/json"}),
            ("/embed", {"texts": ["q"]}, {}),
            ("/v1/embeddings", {"input": ["q"]}, {}),
        ]
        for path, body, headers in requests:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_input" and "non-finite" in error["message"], path
            if path != "/embed":  # one list of inputs: the error names the input
                assert error["index"] == 0, path
        assert error_count(client, "invalid_input") == 3 and error_count(client, "internal_error") == 0
        npz = client.post("/embeddings", json={"input_type": "text", "inputs": ["q"]})
        assert npz.status_code == 200 and np.isnan(np.load(io.BytesIO(npz.content))["emb_0"][0, 0])
    service.engine.close()
