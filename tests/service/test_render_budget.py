"""PDF pages are rendered within the model's page pixel budget: the processor would shrink a
larger page to the same input, so rendering more pixels only costs time (twice: in PDFium and in
the processor's resize)."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient

from pagelens.api import create_app
from pagelens.models.embedder import EmbedderInfo, page_pixel_budget
from pagelens.settings import Settings
from pagelens.testing import build_tiny_checkpoint
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.index.test_pdf import make_pdf


def processor_of(family: str, tmp_path):
    from pagelens.models.families import get_family

    directory = build_tiny_checkpoint(family, tmp_path / family)
    _, processor_class = get_family(family).classes()
    return processor_class.from_pretrained(directory)


def test_a_page_beyond_the_budget_reaches_the_model_as_the_page_at_the_budget(tmp_path):
    from pagelens.index.pdf import render_pages

    data = make_pdf(1)  # 210x300 points
    for family in ("colqwen2_5", "colmodernvbert"):
        processor = processor_of(family, tmp_path)
        budget = page_pixel_budget(processor)
        [[large]] = render_pages(data, dpi=600)  # ~3.6 megapixels; `within` may round up a pixel per side
        [[within]] = render_pages(data, dpi=600, max_pixels=budget)
        assert large.width * large.height > 4 * budget and within.width * within.height <= 1.01 * budget
        large_input, within_input = processor.process_images([large]), processor.process_images([within])
        assert large_input["pixel_values"].shape == within_input["pixel_values"].shape, family
        for key in ("image_grid_thw",):
            if key in large_input:
                assert torch.equal(large_input[key], within_input[key]), family


class RecordingBackend(FakeBackend):
    """A fake model with a page budget that records the size of every page image it is given."""

    def __init__(self, page_pixels: int) -> None:
        super().__init__(dim=128)
        self.info = EmbedderInfo(**{**self.info.as_dict(), "page_pixels": page_pixels})
        self.sizes: list[tuple[int, int]] = []

    def prepare_image(self, image):
        self.sizes.append(image.size)
        return super().prepare_image(image)


def test_an_upload_renders_its_pdf_pages_within_the_loaded_models_budget(tmp_path):
    backend = RecordingBackend(page_pixels=20_000)
    settings = Settings(model=backend.info.model, api_key="test-key-123", data_dir=str(tmp_path), pdf_dpi=150)
    runtime = fake_runtime(backend, settings=settings)
    try:
        with TestClient(create_app(runtime=runtime), headers=AUTH) as client:
            assert client.post("/collections", json={"name": "c"}).status_code in (200, 201)
            response = client.post(
                "/collections/c/documents", files={"file": ("d.pdf", make_pdf(3), "application/pdf")}
            )
            assert response.status_code in (200, 201), response.text
            page = client.get(f"/collections/c/documents/{response.json()['id']}/pages/1")
    finally:
        runtime.close()
    assert len(backend.sizes) == 3
    for width, height in backend.sizes:  # a rounded-up pixel per side at most
        assert 20_000 * 0.98 <= width * height <= 20_000 + width + height, backend.sizes
    import io

    from PIL import Image

    shown = Image.open(io.BytesIO(page.content))
    assert shown.width * shown.height > 4 * 20_000  # the page image a user opens keeps the collection's dpi
