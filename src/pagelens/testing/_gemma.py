"""Tiny checkpoints of the Gemma-based families: ColPali/BiPali (PaliGemma) and ColGemma3/BiGemma3 (Gemma 3).

Both backbones put a SigLIP vision tower (14-pixel patches) in front of a Gemma decoder:

* PaliGemma resizes a page to `PALIGEMMA_IMAGE_SIZE` squared and feeds every patch to the decoder as
  one `<image>` token (`PALIGEMMA_IMAGE_TOKENS` = 4x4). The processor prepends the image tokens and
  inserts `<bos>` after them; its tokenizer pads on the right, like the real one.
* Gemma 3 resizes a page to `GEMMA3_IMAGE_SIZE` squared (8x8 patches) and average-pools the patch grid
  to `GEMMA3_IMAGE_TOKENS` (4x4) `<image_soft_token>`s wrapped in `<start_of_image>`/`<end_of_image>`.
  Prompts go through a chat template (`GEMMA3_CHAT_TEMPLATE`), padding is on the left, and the
  decoder alternates sliding-window and full attention with a window shorter than a page prompt.

Weights are the architecture's own initialisation under `torch.manual_seed(seed)`, except parameters it
initialises to exactly zero (biases, norm offsets, Gemma 3's vision projection), which get small random
values, as in trained checkpoints: a zero projection would make every page embed the same, and with a zero
`custom_text_proj` bias ColGemma3's left-padded positions (zero hidden states: the pad embedding row is zero
and they attend to nothing) would come out as 0/0 = NaN instead of zero rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
from colpali_engine.models import (
    BiGemma3,
    BiGemmaProcessor3,
    BiPali,
    ColGemma3,
    ColGemmaProcessor3,
    ColPali,
    ColPaliProcessor,
)
from transformers import PaliGemmaConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin
from transformers.models.gemma3 import Gemma3Config, Gemma3ImageProcessor
from transformers.models.siglip import SiglipImageProcessor

from pagelens.testing.tokenizer import train_tiny_tokenizer

PATCH_SIZE = 14
PALIGEMMA_IMAGE_SIZE = 56
PALIGEMMA_IMAGE_TOKENS = (PALIGEMMA_IMAGE_SIZE // PATCH_SIZE) ** 2  # 16
GEMMA3_IMAGE_SIZE = 112
GEMMA3_IMAGE_TOKENS = 16  # the 8x8 patch grid average-pooled 2x2 -> 4x4 (Gemma3MultiModalProjector)
GEMMA3_SLIDING_WINDOW = 32  # shorter than a page prompt (38 tokens) so the sliding layer really slides

TEXT_DIMS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=4096,
)
VISION_DIMS = dict(
    model_type="siglip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    patch_size=PATCH_SIZE,
    vision_use_head=False,
)
# SigLIP preprocessing of the real checkpoints: bicubic (PaliGemma) / bilinear (Gemma 3), pixels to [-1, 1].
IMAGE_NORMALIZATION = dict(do_rescale=True, rescale_factor=1 / 255, image_mean=[0.5] * 3, image_std=[0.5] * 3)

# Gemma's special tokens, in the real vocabulary order for the first four (pad 0, eos 1, bos 2, unk 3).
GEMMA_BASE_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
PALIGEMMA_SPECIAL_TOKENS = (*GEMMA_BASE_TOKENS, "<image>")
GEMMA3_SPECIAL_TOKENS = (
    *GEMMA_BASE_TOKENS,
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
# Gemma 3 turn format: `<bos><start_of_turn>user\n{content}<end_of_turn>\n`, an image item rendered as
# `<start_of_image>`, which Gemma3Processor expands to `\n\n<start_of_image>{soft tokens}<end_of_image>\n\n`.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return dict(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )


def _randomize_zero_parameters(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Give every parameter the initialiser left exactly zero small random values, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters(), key=lambda item: item[0]):
            if not torch.any(parameter):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def _save_checkpoint(
    out_dir: Path,
    seed: int,
    model_cls: type[PreTrainedModel],
    config: PaliGemmaConfig | Gemma3Config,
    processor: ProcessorMixin,
) -> None:
    """Instantiate `model_cls(config)` with seeded weights and save it with `processor` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_cls(config)
    _randomize_zero_parameters(model, seed)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _paligemma_processor(processor_cls: type[ProcessorMixin]) -> ProcessorMixin:
    tokenizer = train_tiny_tokenizer(
        PALIGEMMA_SPECIAL_TOKENS,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        padding_side="right",
    )
    image_processor = SiglipImageProcessor(
        size={"height": PALIGEMMA_IMAGE_SIZE, "width": PALIGEMMA_IMAGE_SIZE},
        resample=3,
        image_seq_length=PALIGEMMA_IMAGE_TOKENS,
        **IMAGE_NORMALIZATION,
    )
    # PaliGemmaProcessor adds its 1024 <locXXXX> and 128 <segXXX> tokens to the tokenizer here.
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer)


def build_paligemma(
    out_dir: Path, seed: int, *, model_cls: type[PreTrainedModel], processor_cls: type[ProcessorMixin]
) -> None:
    """Write a tiny PaliGemma-backed `model_cls` checkpoint (config, weights, processor) into `out_dir`."""
    processor = _paligemma_processor(processor_cls)
    tokenizer = processor.tokenizer
    vocab_size = len(tokenizer)
    token_ids = _special_token_ids(tokenizer)
    config = PaliGemmaConfig(
        text_config=dict(model_type="gemma", num_key_value_heads=1, vocab_size=vocab_size, **TEXT_DIMS, **token_ids),
        vision_config=dict(image_size=PALIGEMMA_IMAGE_SIZE, **VISION_DIMS),
        image_token_index=processor.image_token_id,
        vocab_size=vocab_size,
        projection_dim=TEXT_DIMS["hidden_size"],
        hidden_size=TEXT_DIMS["hidden_size"],
        **token_ids,
    )
    _save_checkpoint(out_dir, seed, model_cls, config, processor)


def _gemma3_processor(processor_cls: type[ProcessorMixin]) -> ProcessorMixin:
    trained = train_tiny_tokenizer(
        GEMMA3_SPECIAL_TOKENS, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    # Gemma3Processor reads the image tokens from named tokenizer attributes (`boi_token`, ...), which only
    # the constructor can declare, so wrap the trained backend again with them and the chat template.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
        extra_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        chat_template=GEMMA3_CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=trained.model_max_length,
    )
    image_processor = Gemma3ImageProcessor(
        size={"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE},
        resample=2,
        do_pan_and_scan=False,
        **IMAGE_NORMALIZATION,
    )
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=GEMMA3_IMAGE_TOKENS)


def build_gemma3(
    out_dir: Path, seed: int, *, model_cls: type[PreTrainedModel], processor_cls: type[ProcessorMixin]
) -> None:
    """Write a tiny Gemma3-backed `model_cls` checkpoint (config, weights, processor) into `out_dir`."""
    processor = _gemma3_processor(processor_cls)
    tokenizer = processor.tokenizer
    token_ids = _special_token_ids(tokenizer)
    config = Gemma3Config(
        text_config=dict(
            model_type="gemma3_text",
            num_key_value_heads=2,
            query_pre_attn_scalar=TEXT_DIMS["head_dim"],
            sliding_window=GEMMA3_SLIDING_WINDOW,
            layer_types=["sliding_attention", "full_attention"],
            vocab_size=len(tokenizer),
            **TEXT_DIMS,
            **token_ids,
        ),
        vision_config=dict(image_size=GEMMA3_IMAGE_SIZE, **VISION_DIMS),
        mm_tokens_per_image=GEMMA3_IMAGE_TOKENS,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
        **token_ids,
    )
    _save_checkpoint(out_dir, seed, model_cls, config, processor)


# family -> (backbone builder, model class, processor class that writes the processor files).
# BiPali writes ColPaliProcessor files: they are the same files, and BiPaliProcessor cannot be constructed
# under transformers 5 (its `__init__(*args, **kwargs)` hides the `image_processor`/`tokenizer` parameters
# that ProcessorMixin.get_attributes() reads, so the instance gets neither).
_FAMILIES: dict[str, tuple[Callable[..., None], type[PreTrainedModel], type[ProcessorMixin]]] = {
    "colpali": (build_paligemma, ColPali, ColPaliProcessor),
    "bipali": (build_paligemma, BiPali, ColPaliProcessor),
    "bigemma3": (build_gemma3, BiGemma3, BiGemmaProcessor3),
    "colgemma3": (build_gemma3, ColGemma3, ColGemmaProcessor3),
}

BUILDERS: dict[str, Callable[[Path, int], None]] = {
    family: functools.partial(build, model_cls=model_cls, processor_cls=processor_cls)
    for family, (build, model_cls, processor_cls) in _FAMILIES.items()
}
