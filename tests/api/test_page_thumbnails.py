"""`GET .../pages/{n}?width=W`: a JPEG thumbnail that wide, with ETag and Cache-Control, 304 when the
client's copy is current, 400 for a width out of range; no width keeps the full-size PNG."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pagelens.api import create_app
from pagelens.index.collections import Collections
from pagelens.service.thumbnails import ThumbnailCache, matches
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.index.test_pdf import make_pdf


@pytest.fixture
def thumbnail_client(tmp_path):
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=144)
    collections = Collections(tmp_path / "data")
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    try:
        with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
            assert client.post("/collections", json={"name": "c"}).status_code == 201
            files = {"file": ("three.pdf", make_pdf(3), "application/pdf")}
            document_id = client.post("/collections/c/documents", files=files).json()["id"]
            yield client, f"/collections/c/documents/{document_id}/pages"
    finally:
        runtime.close()
        collections.close()


def test_width_gives_a_small_jpeg_with_validators_and_304_when_current(thumbnail_client):
    client, pages = thumbnail_client
    full = client.get(f"{pages}/2")
    assert full.headers["content-type"] == "image/png" and "etag" not in full.headers
    assert Image.open(io.BytesIO(full.content)).size == (420, 600)  # 210 x 300 pt at 144 DPI

    small = client.get(f"{pages}/2", params={"width": 120})
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(small.content))
    assert image.format == "JPEG" and image.size == (120, round(600 * 120 / 420))
    assert len(small.content) < len(full.content) / 4
    red, green, blue = image.convert("RGB").getpixel((60, 80))
    assert abs(red - 10) < 12 and abs(green - 100) < 12 and abs(blue - 200) < 12  # page 2's own colour
    etag = small.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "max-age" in small.headers["cache-control"] and "private" in small.headers["cache-control"]

    again = client.get(f"{pages}/2", params={"width": 120}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    weak = client.get(f"{pages}/2", params={"width": 120}, headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304

    other_width = client.get(f"{pages}/2", params={"width": 64}, headers={"If-None-Match": etag})
    assert other_width.status_code == 200 and other_width.headers["etag"] != etag
    other_page = client.get(f"{pages}/3", params={"width": 120}, headers={"If-None-Match": etag})
    assert other_page.status_code == 200 and other_page.headers["etag"] != etag


def test_a_width_over_the_page_keeps_the_page_size(thumbnail_client):
    client, pages = thumbnail_client
    image = Image.open(io.BytesIO(client.get(f"{pages}/1", params={"width": 2048}).content))
    assert image.size == (400, 600)


@pytest.mark.parametrize("width", ["15", "2049", "0", "-3", "wide"])
def test_a_width_out_of_range_is_a_400_naming_it(thumbnail_client, width):
    client, pages = thumbnail_client
    response = client.get(f"{pages}/1", params={"width": width})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input" and "width" in response.json()["error"]["message"]


def test_a_missing_page_is_a_404_even_with_a_known_etag(thumbnail_client):
    client, pages = thumbnail_client
    etag = client.get(f"{pages}/1", params={"width": 100}).headers["etag"]
    response = client.get(f"{pages}/4", params={"width": 100}, headers={"If-None-Match": etag})
    assert response.status_code == 404 and "1..3" in response.json()["error"]["message"]


def test_the_cache_drops_the_least_recently_used_past_its_bytes():
    cache = ThumbnailCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"1234"
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None


def test_if_none_match_parsing():
    assert matches('"x"', '"x"') and matches('W/"x"', '"x"') and matches('"y", "x"', '"x"') and matches("*", '"x"')
    assert not matches(None, '"x"') and not matches('"y"', '"x"') and not matches("", '"x"')


def test_a_thumbnail_is_rendered_once_then_served_from_the_cache(thumbnail_client, monkeypatch):
    from pagelens.service import thumbnails

    client, pages = thumbnail_client
    rendered = []
    real = thumbnails.render_thumbnail
    monkeypatch.setattr(thumbnails, "render_thumbnail", lambda *args: rendered.append(args) or real(*args))
    first = client.get(f"{pages}/3", params={"width": 90})
    second = client.get(f"{pages}/3", params={"width": 90})  # no If-None-Match: the bytes again, not re-rendered
    assert first.content == second.content and first.headers["etag"] == second.headers["etag"]
    assert len(rendered) == 1
    client.get(f"{pages}/3", params={"width": 91})
    assert len(rendered) == 2
