"""Shared fixtures: generated page images and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw


def make_page(width: int, height: int, seed: int = 0) -> Image.Image:
    """A synthetic page: noise background with dark 'text' bars, deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(200, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for row in range(max(1, height // 40)):
        top = 10 + row * 40
        length = int(rng.integers(width // 4, max(width // 4 + 1, width - 20)))
        draw.rectangle([10, top, 10 + length, top + 12], fill=(20, 20, 20))
    return image


def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def pages() -> list[Image.Image]:
    """Three pages of different sizes and aspect ratios."""
    return [make_page(600, 800, 1), make_page(500, 300, 2), make_page(320, 320, 3)]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny ColQwen2.5 checkpoint (real architecture, random weights)."""
    from pagelens.testing import build_tiny_checkpoint

    return build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """A real `pagelens serve` process on loopback serving `tiny_model` in float32, key REAL_KEY."""
    from tests.api.server import REAL_KEY, running_server

    log_path = tmp_path_factory.mktemp("log") / "server.log"
    with running_server(tiny_model, api_key=REAL_KEY, log_path=log_path) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL chat checkpoint (real model and processor classes, a chat template, random weights)."""
    from pagelens.testing import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="module")
def tiny_vlm(tiny_vlm_dir):
    """`tiny_vlm_dir` loaded as the in-process answer model, float32 on the CPU with one torch thread
    (a model this small only pays thread overhead for more: ~10x slower with 2 on a busy machine);
    torch's thread count is restored after the module."""
    import torch

    from pagelens.rag.local_vlm import TransformersVLM

    threads = torch.get_num_threads()
    vlm = TransformersVLM.load(str(tiny_vlm_dir), device="cpu", dtype="float32", threads=1)
    yield vlm
    vlm.close()
    torch.set_num_threads(threads)
