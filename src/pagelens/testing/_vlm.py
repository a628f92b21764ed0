"""A tiny random-weight Qwen2.5-VL / Qwen2-VL chat model (`*ForConditionalGeneration` + processor with a
chat template), for the in-process answer model's tests.

It shares the tiny ColQwen checkpoints' dims, tokenizer and image processor (pagelens.testing._qwen):
2 text layers of width 64, a 2-block vision tower, a ~400-entry BPE with Qwen's special tokens, pages
resized to 4..64 image tokens. A generation of 16 tokens takes a few milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

from pagelens.testing import _qwen

VlmBackbone = Literal["qwen2_5_vl", "qwen2_vl"]

MODEL_CLASSES = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen2_vl": Qwen2VLForConditionalGeneration}
PROCESSOR_CLASSES = {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen2_vl": Qwen2VLProcessor}

# Qwen's ChatML turns. A text part is its text; an image part (HF's {"type": "image"}) is the vision
# span, which the processor widens to one <|image_pad|> per image token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)


def build_tiny_vlm(out_dir: str | Path, *, backbone: VlmBackbone = "qwen2_5_vl", seed: int = 0) -> Path:
    """Write config, seeded random float32 weights, generation config and processor (tokenizer, image
    processor, chat template) of a tiny `backbone` chat VLM into `out_dir`; return the directory.
    Loads back with `AutoModelForImageTextToText` / `AutoProcessor`."""
    if backbone not in MODEL_CLASSES:
        raise ValueError(f"unknown tiny VLM backbone {backbone!r}; use {', '.join(MODEL_CLASSES)}")
    out = Path(out_dir)
    pixel_bounds = {"shortest_edge": _qwen.MIN_PIXELS, "longest_edge": _qwen.MAX_PIXELS}
    shapes = dict(
        patch_size=_qwen.PATCH_SIZE, merge_size=_qwen.MERGE_SIZE, temporal_patch_size=_qwen.TEMPORAL_PATCH_SIZE
    )
    processor = PROCESSOR_CLASSES[backbone](
        image_processor=Qwen2VLImageProcessor(size=dict(pixel_bounds), **shapes),
        video_processor=Qwen2VLVideoProcessor(size=dict(pixel_bounds), **shapes),
        tokenizer=_qwen._tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer = processor.tokenizer
    config = _qwen._config(backbone, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODEL_CLASSES[backbone](config).to(torch.float32).eval()
        _qwen._randomize_zero_init(model, tokenizer.pad_token_id, config.text_config.initializer_range)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],  # <|im_end|>, <|endoftext|>
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
