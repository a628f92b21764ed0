"""Tiny Idefics3 / ModernVBert checkpoints load through colpali-engine, tile pages and embed consistently."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pagelens.models.families import get_family
from pagelens.testing._idefics import BUILDERS, IMAGE_SEQ_LEN
from tests.conftest import make_page
from tests.testing.checks import check_checkpoint_files, embed_and_check

pytestmark = pytest.mark.slow

FAMILIES = ["colidefics3", "biidefics3", "colmodernvbert", "bimodernvbert"]
QUERIES = ["short query", "a somewhat longer query about quarterly revenue"]


@pytest.fixture
def checkpoint(request, tmp_path):
    """(directory, family, model, processor) of a freshly built and reloaded tiny checkpoint."""
    family = get_family(request.param)
    BUILDERS[family.name](tmp_path, 0)
    model_class, processor_class = family.classes()
    model, info = model_class.from_pretrained(tmp_path, dtype=torch.float32, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return tmp_path, family, model.eval(), processor_class.from_pretrained(tmp_path)


@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_checkpoint_files_config_and_processor(checkpoint):
    path, family, model, processor = checkpoint
    check_checkpoint_files(path, family)

    tokenizer = processor.tokenizer
    assert type(processor.image_processor).__name__ == "Idefics3ImageProcessor"  # the torchvision backend
    assert processor.image_seq_len == model.model.image_seq_len == IMAGE_SEQ_LEN
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_id == processor.image_token_id == image_token_id
    assert model.config.text_config.vocab_size >= len(tokenizer)
    assert tokenizer.pad_token_id is not None
    assert model.config.text_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.padding_side == "left"
    for token in ("<fake_token_around_image>", "<global-img>", "<row_4_col_4>", "<end_of_utterance>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id, token
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    prompt_ids = tokenizer(processor.visual_prompt_prefix, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in prompt_ids
    if family.model_class == "ColIdefics3":
        assert isinstance(model.linear, torch.nn.Linear), "ColSmol's projection is published as `linear`"


@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_pages_are_tiled_and_embedded_consistently(checkpoint):
    _, family, model, processor = checkpoint
    pages = [make_page(600, 800, 1), make_page(500, 300, 2), make_page(320, 320, 3)]
    batch, _ = embed_and_check(model, processor.process_images, pages, multi_vector=family.multi_vector)

    # Padding tiles are all zero; each real tile (grid tiles + one global) has IMAGE_SEQ_LEN <image> tokens.
    tiles = (batch["pixel_values"].flatten(2) != 0).any(-1).sum(-1).tolist()
    assert tiles == [4 * 3 + 1, 3 * 4 + 1, 4 * 4 + 1]  # portrait 4 rows x 3 cols, landscape 3x4, square 4x4
    image_tokens = (batch["input_ids"] == model.config.image_token_id).sum(-1).tolist()
    assert image_tokens == [n * IMAGE_SEQ_LEN for n in tiles]
    texts = processor.tokenizer.batch_decode(batch["input_ids"])
    assert "<row_4_col_3>" in texts[0] and "<row_1_col_4>" not in texts[0]
    assert "<row_3_col_4>" in texts[1] and "<row_4_col_1>" not in texts[1]
    assert all(text.count("<global-img>") == 1 for text in texts)


@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_queries_are_embedded_consistently(checkpoint):
    _, family, model, processor = checkpoint
    batch, _ = embed_and_check(model, processor.process_queries, QUERIES, multi_vector=family.multi_vector)
    assert "pixel_values" not in batch


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_are_deterministic_in_the_seed(family, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        BUILDERS[family](tmp_path / name, seed)
    first, same, other = (load_file(tmp_path / name / "model.safetensors") for name in "abc")
    assert first.keys() == same.keys() == other.keys()
    assert all(torch.equal(first[key], same[key]) for key in first)
    assert all(not torch.equal(first[key], other[key]) for key in first), "every tensor depends on the seed"
    assert all(torch.count_nonzero(tensor) == tensor.numel() for tensor in first.values()), "no zero weights"
