"""Tiny checkpoints of the Qwen-VL families: Col/BiQwen2.5 (Qwen2.5-VL backbone), Col/BiQwen2 (Qwen2-VL).

Both backbones share the Qwen2-VL processor: a page is resized (aspect ratio kept) to a multiple
of `PATCH_SIZE * MERGE_SIZE` pixels per side with an area between `MIN_PIXELS` and `MAX_PIXELS`,
cut into 14-pixel patches, and every 2x2 block of patches becomes one `<|image_pad|>` token after
the vision merger, so a page yields between `MIN_IMAGE_TOKENS` and `MAX_IMAGE_TOKENS` image tokens.
The text decoder uses multimodal RoPE (temporal/height/width sections). The Qwen2.5-VL vision tower
alternates windowed and full attention; the window is smaller than a page so both paths run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2VLConfig
from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

from pagelens.testing._variants import Builder, Variant, make_builders
from pagelens.testing.tokenizer import train_tiny_tokenizer

Backbone = Literal["qwen2_5_vl", "qwen2_vl"]

PATCH_SIZE = 14
MERGE_SIZE = 2  # `spatial_merge_size`: 2x2 patches -> one image token
TEMPORAL_PATCH_SIZE = 2  # a still image is repeated along time to fill the temporal patch
PIXELS_PER_IMAGE_TOKEN = (PATCH_SIZE * MERGE_SIZE) ** 2
MIN_IMAGE_TOKENS = 4
MAX_IMAGE_TOKENS = 64
MIN_PIXELS = MIN_IMAGE_TOKENS * PIXELS_PER_IMAGE_TOKEN
MAX_PIXELS = MAX_IMAGE_TOKENS * PIXELS_PER_IMAGE_TOKEN

# The real Qwen2-VL special tokens, in their vocabulary order (151643 onwards).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PAD_TOKEN = "<|endoftext|>"  # also Qwen's bos id and colpali's query augmentation token
EOS_TOKEN = "<|im_end|>"

TEXT_HIDDEN_SIZE = 64
TEXT_DIMS = dict(
    hidden_size=TEXT_HIDDEN_SIZE,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    # head_dim 16 -> 8 rotary frequencies over (temporal, height, width), like 16/24/24 of 64 in real models
    rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0, mrope_section=[2, 3, 3]),
)
VISION_COMMON = dict(
    depth=2,
    num_heads=2,
    patch_size=PATCH_SIZE,
    spatial_merge_size=MERGE_SIZE,
    temporal_patch_size=TEMPORAL_PATCH_SIZE,
)
VISION_DIMS: dict[Backbone, dict] = {
    # Qwen2.5-VL: `hidden_size` is the ViT width, `out_hidden_size` the merger output (= text width).
    "qwen2_5_vl": dict(
        hidden_size=32,
        intermediate_size=64,
        out_hidden_size=TEXT_HIDDEN_SIZE,
        window_size=112,  # pixels: 112 / 14 / 2 = 4x4 image tokens per window
        fullatt_block_indexes=[1],  # block 0 windowed, block 1 full attention
        **VISION_COMMON,
    ),
    # Qwen2-VL: `embed_dim` is the ViT width, `hidden_size` the merger output (= text width).
    "qwen2_vl": dict(embed_dim=32, mlp_ratio=2, hidden_size=TEXT_HIDDEN_SIZE, **VISION_COMMON),
}
CONFIG_CLASSES: dict[Backbone, type] = {"qwen2_5_vl": Qwen2_5_VLConfig, "qwen2_vl": Qwen2VLConfig}


def _tokenizer() -> PreTrainedTokenizerFast:
    """A tiny BPE with Qwen's special tokens; like Qwen's, it has no bos/unk token."""
    return train_tiny_tokenizer(SPECIAL_TOKENS, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def _config(backbone: Backbone, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig | Qwen2VLConfig:
    """The backbone config with tiny dims and every token id taken from `tokenizer`."""
    token_id = tokenizer.convert_tokens_to_ids
    return CONFIG_CLASSES[backbone](
        text_config=dict(
            vocab_size=len(tokenizer),
            bos_token_id=token_id(PAD_TOKEN),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_DIMS,
        ),
        vision_config=dict(VISION_DIMS[backbone]),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )


def _randomize_zero_init(model: torch.nn.Module, pad_token_id: int, std: float) -> None:
    """Draw the parameters the default init leaves at zero: biases and the pad token's embedding.

    Trained checkpoints have neither. Zeros there hide real behaviour: `<|endoftext|>` is both the
    pad and the query-augmentation token, and with a zero embedding and a zero projection bias the
    padded rows of a Col* output become 0/0 = NaN instead of zero.
    """
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and not parameter.any():
                parameter.normal_(0.0, std)
        model.get_input_embeddings().weight[pad_token_id].normal_(0.0, std)


def _build(variant: Variant, out_dir: Path, seed: int) -> None:
    """Write config, seeded random weights and processor files of `variant` into `out_dir`."""
    import colpali_engine.models as colpali_models

    model_class = getattr(colpali_models, variant.model_class)
    processor_class = getattr(colpali_models, variant.processor_class)

    pixel_bounds = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    shapes = dict(patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE)
    processor = processor_class(
        # Qwen2VLImageProcessor is the torchvision ("fast") backend; Qwen2VLImageProcessorPil the slow one.
        image_processor=Qwen2VLImageProcessor(size=dict(pixel_bounds), **shapes),
        video_processor=Qwen2VLVideoProcessor(size=dict(pixel_bounds), **shapes),
        tokenizer=_tokenizer(),
    )
    config = _config(variant.backbone, processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(torch.float32).eval()
        _randomize_zero_init(model, processor.tokenizer.pad_token_id, config.text_config.initializer_range)
    if model.config.image_token_id != processor.image_token_id:
        raise RuntimeError("model and processor disagree on the image token id")

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # records `architectures: [model class name]`
    processor.save_pretrained(out_dir)


VARIANTS: dict[str, Variant] = {
    "colqwen2_5": Variant("ColQwen2_5", "ColQwen2_5_Processor", "qwen2_5_vl"),
    "biqwen2_5": Variant("BiQwen2_5", "BiQwen2_5_Processor", "qwen2_5_vl"),
    "colqwen2": Variant("ColQwen2", "ColQwen2Processor", "qwen2_vl"),
    "biqwen2": Variant("BiQwen2", "BiQwen2Processor", "qwen2_vl"),
}

BUILDERS: dict[str, Builder] = make_builders(VARIANTS, _build)
