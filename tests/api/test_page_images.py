"""Page images are served downscaled to 4 megapixels (aspect kept) unless `?full=true`."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from pagelens.api import create_app
from pagelens.codecs.images import PAGE_IMAGE_MAX_PIXELS
from pagelens.index.collections import Collections
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.conftest import encode


def test_large_pages_are_served_downscaled_unless_full_is_asked(tmp_path):
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"))
    collections = Collections(tmp_path / "data")
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings, collections=collections)
    scan = Image.new("RGB", (3000, 2000), "white")  # 6 Mpx
    ImageDraw.Draw(scan).rectangle([100, 100, 2900, 300], fill="black")
    small = Image.new("RGB", (300, 200), "white")
    try:
        with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
            assert client.post("/collections", json={"name": "scans"}).status_code == 201
            ids = []
            for image in (scan, small):
                files = {"file": ("scan.png", encode(image), "image/png")}
                ids.append(client.post("/collections/scans/documents", files=files).json()["id"])

            def page(document_id, query=""):
                response = client.get(f"/collections/scans/documents/{document_id}/pages/1{query}")
                assert response.status_code == 200 and response.headers["content-type"] == "image/png"
                return Image.open(io.BytesIO(response.content))

            served = page(ids[0])
            assert served.width * served.height <= PAGE_IMAGE_MAX_PIXELS < 6_000_000
            assert served.width * served.height > 0.95 * PAGE_IMAGE_MAX_PIXELS
            assert abs(served.width / served.height - 1.5) < 0.01
            assert served.convert("L").getpixel((served.width // 2, int(200 * served.height / 2000))) < 50
            assert page(ids[0], "?full=true").size == (3000, 2000)
            assert page(ids[1]).size == (300, 200), "a small page was resized"
    finally:
        runtime.close()
        collections.close()
