"""Tiny checkpoints of the Idefics3-style families: ColSmol/BiSmol (Idefics3) and (Col|Bi)ModernVBert.

Both backbones share the Idefics3 processor: a page is resized so its longest edge is
`PAGE_LONGEST_EDGE`, cut into `TILE_SIZE` tiles plus one global tile, and every tile becomes
`IMAGE_SEQ_LEN` `<image>` tokens after the vision encoder and the pixel-shuffle connector.
Idefics3 pairs a SigLIP-like encoder with a Llama decoder; ModernVBert pairs SigLIP with a
bidirectional ModernBERT encoder (alternating global and sliding-window attention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import Idefics3Config, Idefics3ImageProcessor, ModernVBertConfig, PreTrainedTokenizerFast

from pagelens.testing._variants import Builder, Variant, make_builders
from pagelens.testing.tokenizer import train_tiny_tokenizer

Backbone = Literal["idefics3", "modernvbert"]

TILE_SIZE = 64  # vision encoder input side == `max_image_size.longest_edge`
PATCH_SIZE = 16
PIXEL_SHUFFLE = 2  # Idefics3 `scale_factor`, ModernVBert `pixel_shuffle_factor`
IMAGE_SEQ_LEN = (TILE_SIZE // PATCH_SIZE) ** 2 // PIXEL_SHUFFLE**2  # <image> tokens per tile
PAGE_LONGEST_EDGE = 4 * TILE_SIZE  # up to 4 tiles along a page's longest side

VISION_DIMS = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=TILE_SIZE,
    patch_size=PATCH_SIZE,
)
TEXT_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)

TILE_TOKENS = tuple(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7))
IMAGE_TOKENS = ("<image>", "<fake_token_around_image>", "<global-img>", *TILE_TOKENS)


def _tokenizer(backbone: Backbone) -> PreTrainedTokenizerFast:
    """A tiny BPE carrying the tokens of the backbone's real tokenizer that the prompts use."""
    if backbone == "idefics3":  # SmolVLM / ColSmol conventions
        unk, bos, eos, pad = "<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<|im_end|>"
        extra: tuple[str, ...] = ()
    else:  # ModernBERT-style vocabulary plus the begin/end markers of the ColModernVBert prompt
        unk, bos, eos, pad = "[UNK]", "<|begin_of_text|>", "<|end_of_text|>", "[PAD]"
        extra = ("[CLS]", "[SEP]", "[MASK]", "<end_of_utterance>")
    specials = [unk, bos, eos, pad, *extra, *IMAGE_TOKENS]
    return train_tiny_tokenizer(specials, unk_token=unk, bos_token=bos, eos_token=eos, pad_token=pad)


def _config(backbone: Backbone, tokenizer: PreTrainedTokenizerFast) -> Idefics3Config | ModernVBertConfig:
    """The backbone config with tiny dims and every token id taken from `tokenizer`."""
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=2048,
    )
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    if backbone == "idefics3":
        return Idefics3Config(
            vision_config=dict(VISION_DIMS),
            text_config=dict(model_type="llama", num_key_value_heads=2, **TEXT_DIMS, **ids),
            scale_factor=PIXEL_SHUFFLE,
            image_token_id=image_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return ModernVBertConfig(
        # The connector reads the last hidden state; SigLIP's attention-pooling head would be dead weight.
        vision_config=dict(model_type="siglip_vision_model", vision_use_head=False, **VISION_DIMS),
        text_config=dict(
            model_type="modernbert",
            global_attn_every_n_layers=2,  # layer 0 global, layer 1 sliding window
            local_attention=16,  # shorter than a page's token sequence, so the window matters
            cls_token_id=tokenizer.convert_tokens_to_ids("[CLS]"),
            sep_token_id=tokenizer.convert_tokens_to_ids("[SEP]"),
            **TEXT_DIMS,
            **ids,
        ),
        pixel_shuffle_factor=PIXEL_SHUFFLE,
        image_token_id=image_token_id,
    )


def _roughen(model: torch.nn.Module, scale: float = 0.02) -> None:
    """Add seeded noise to every parameter so that, as in a trained checkpoint, none is zero or constant.

    Fresh init leaves biases at 0, norm scales at 1 and the padding-embedding row at 0. With those,
    a left-padded position of a causal (Llama) text model stays exactly 0 under SDPA, and ColIdefics3's
    unclamped `proj / proj.norm()` turns it into NaN, which real checkpoints never produce.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=scale)


def _build(variant: Variant, out_dir: Path, seed: int) -> None:
    """Write config, seeded random weights and processor files of `variant` into `out_dir`."""
    import colpali_engine.models as colpali_models

    model_class = getattr(colpali_models, variant.model_class)
    processor_class = getattr(colpali_models, variant.processor_class)

    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True,
        size={"longest_edge": PAGE_LONGEST_EDGE},
        max_image_size={"longest_edge": TILE_SIZE},
    )
    processor = processor_class(
        image_processor=image_processor, tokenizer=_tokenizer(variant.backbone), image_seq_len=IMAGE_SEQ_LEN
    )
    config = _config(variant.backbone, processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(torch.float32)
        _roughen(model)
    if model.model.image_seq_len != processor.image_seq_len:
        raise RuntimeError(
            f"model reads {model.model.image_seq_len} <image> tokens per tile, "
            f"processor writes {processor.image_seq_len}"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # records `architectures: [model class name]`
    processor.save_pretrained(out_dir)


VARIANTS: dict[str, Variant] = {
    "colidefics3": Variant("ColIdefics3", "ColIdefics3Processor", "idefics3"),
    "biidefics3": Variant("BiIdefics3", "BiIdefics3Processor", "idefics3"),
    "colmodernvbert": Variant("ColModernVBert", "ColModernVBertProcessor", "modernvbert"),
    "bimodernvbert": Variant("BiModernVBert", "BiModernVBertProcessor", "modernvbert"),
}

BUILDERS: dict[str, Builder] = make_builders(VARIANTS, _build)
