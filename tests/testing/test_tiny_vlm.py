"""The tiny chat VLM builder: real Qwen2.5-VL / Qwen2-VL classes that load back with nothing missing,
a ChatML chat template, a generation config ending the turn, seeded weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pagelens.testing import build_tiny_vlm

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("backbone", "model_class"),
    [("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"), ("qwen2_vl", "Qwen2VLForConditionalGeneration")],
)
def test_loads_back_whole_with_a_chat_template(tmp_path, backbone, model_class):
    directory = build_tiny_vlm(tmp_path, backbone=backbone)
    model, info = AutoModelForImageTextToText.from_pretrained(directory, output_loading_info=True)
    assert type(model).__name__ == model_class
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert sum(parameter.numel() for parameter in model.parameters()) < 500_000
    processor = AutoProcessor.from_pretrained(directory)
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(
        [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Why?"}]}],
        add_generation_prompt=True, tokenize=False,
    )  # fmt: skip
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Why?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.convert_ids_to_tokens(model.generation_config.eos_token_id) == ["<|im_end|>", "<|endoftext|>"]
    assert model.config.image_token_id == processor.image_token_id


def test_weights_follow_the_seed(tmp_path):
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        model = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / name, seed=seed))
        return {key: value.clone() for key, value in model.state_dict().items()}

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)
