"""Patch layouts (models/patches.py) from each family's real processor on tiny checkpoints: every
Col* family whose processor has a patch grid records one whose rows are exactly the page's
image-token rows (those the processor's mask names, among the rows the embedding keeps), one run
for Qwen and ColPali pages, one per tile for Idefics3 and ModernVBert pages (the global tile left
out); ColGemma3, single-vector families and pooled pages record none."""

from __future__ import annotations

import pytest

from pagelens.models import Embedder
from pagelens.testing import build_tiny_checkpoint
from tests.conftest import make_page

PAGE = make_page(600, 800, 2)  # portrait
WITH_GRIDS = {"colqwen2_5": 1, "colqwen2": 1, "colpali": 1, "colidefics3": None, "colmodernvbert": None}


def load(family: str, directory, **options) -> Embedder:
    return Embedder.load(str(build_tiny_checkpoint(family, directory)), device="cpu", dtype="float32", **options)


@pytest.mark.slow
@pytest.mark.parametrize("family", WITH_GRIDS)
def test_a_pages_layout_names_its_image_token_rows_on_its_grid(family, tmp_path):
    embedder = load(family, tmp_path)
    prepared = embedder.prepare_image(PAGE)
    layout = prepared.layout
    assert layout is not None
    n_x, n_y = layout["grid"]
    rows = [row for start, count in layout["rows"] for row in range(start, start + count)]
    assert len(rows) == n_x * n_y == len(set(rows))

    processor = embedder.processor
    features = processor.process_images([PAGE])
    ids = features["input_ids"][0][features["attention_mask"][0].bool()].tolist()
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    image_rows = [row for row, token in enumerate(ids) if token == image_token]
    vectors = embedder.forward(embedder.collate([prepared]))[0]
    assert len(vectors) == len(ids)  # the stored rows are the processor's rows, in order
    if WITH_GRIDS[family] == 1:
        assert rows == image_rows and len(layout["rows"]) == 1  # every image token, one run
        if family != "colpali":  # ColPali resizes every page to a square
            assert n_y > n_x
    else:
        tile = processor.image_seq_len
        assert rows == image_rows[:-tile]  # all but the global tile, which comes last
        assert len(layout["rows"]) == len(rows) // tile and all(count == tile for _, count in layout["rows"])
        assert n_y > n_x

    query = embedder.forward(embedder.collate([embedder.prepare_query("total due")]))[0]
    maps = embedder.similarity_maps(vectors, query, layout)
    assert maps.shape == (len(query), n_x, n_y)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["colgemma3", "biqwen2_5"])
def test_families_without_a_patch_grid_record_none(family, tmp_path):
    embedder = load(family, tmp_path)
    assert embedder.prepare_image(PAGE).layout is None


@pytest.mark.slow
def test_pooled_pages_record_none(tmp_path):
    embedder = load("colqwen2_5", tmp_path, pool_factor=2)
    assert not embedder.gives_patch_maps and embedder.prepare_image(PAGE).layout is None
