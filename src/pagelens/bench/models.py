"""The architectures the benches run: published layer dimensions with random weights, or tiny ones.

    arch = ARCHS["colqwen2.5-3b"]
    bench_model = arch.build(scratch_dir, layers=4)       # or layers=None: published depth
    sdpa = bench_model.model("sdpa", torch.bfloat16)     # every call: the same seeded weights

`colqwen2.5-3b`, `colmodernvbert` and `colpali-3b` use the real colpali-engine model and processor classes with
the published layer widths, heads, vocabulary and image-processor bounds; only the tokenizer is the
tiny offline one (it changes token ids, not the amount of compute). `tiny-*` are the test
suite's tiny checkpoints (2 + 2 layers), for checking the benches' plumbing quickly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

QWEN_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 128000,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
QWEN_VISION = {
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "hidden_act": "silu",
    "in_chans": 3,
    "tokens_per_second": 2,
}
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 3136, 602112  # 4 to 768 visual tokens

# ModernVBERT/colmodernvbert: ModernBERT-base (ettin-encoder-150m) + SigLIP2-base-patch16-512, pixel shuffle 4.
MODERNVBERT_TEXT = {"hidden_size": 768, "intermediate_size": 1152, "num_attention_heads": 12, "vocab_size": 50408}
MODERNVBERT_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
}
MODERNVBERT_PAGE_EDGE, MODERNVBERT_TILE_EDGE, MODERNVBERT_PIXEL_SHUFFLE = 2048, 512, 4

# ColPali v1.3: PaliGemma-3B at 448 pixels, a Gemma-2B decoder behind SigLIP-So400m/14 (1024 image tokens).
PALIGEMMA_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 16384,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "vocab_size": 257216,
}
PALIGEMMA_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16, "patch_size": 14}
PALIGEMMA_IMAGE_EDGE = 448


def synthetic_page(seed: int, width: int = 600, height: int = 800) -> Image.Image:
    """A page-like image: white with lines of dark 'text' and a boxed 'table'."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for line in range(height // 30):
        top = 20 + line * 30
        draw.rectangle([30, top, 30 + int(rng.integers(100, width - 60)), top + 10], fill=(30, 30, 30))
    draw.rectangle([60, height // 2, width - 60, height // 2 + 150], outline=(0, 0, 0), width=2)
    return page


@dataclass
class BenchModel:
    """One architecture at one depth: its processor and a factory of identically seeded models."""

    arch: Arch
    processor: Any
    config: Any
    text_layers: int
    vision_layers: int

    def model(self, attention: str, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
        """A fresh model with `attention` and `dtype`; the weights are the same on every call (seed 0)."""
        model_class, _ = self.arch.family_spec.classes()
        config = copy.deepcopy(self.config)
        config._attn_implementation = attention
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = model_class(config)
        return model.to(dtype).eval()

    @property
    def cpu_default_attention(self) -> str:
        """The attention `Embedder.load` picks for this model on a CPU in bf16 (attn "auto")."""
        from pagelens.models.hardware import attention_candidates

        model_class, _ = self.arch.family_spec.classes()
        return attention_candidates("auto", torch.device("cpu"), torch.bfloat16, model_class)[0]

    @property
    def depth(self) -> str:
        text, vision = self.arch.published_layers
        full = self.text_layers == text and self.vision_layers == vision
        return f"{self.text_layers} text + {self.vision_layers} vision layers" + (
            " (full depth)" if full else f" (published: {text} + {vision})"
        )


@dataclass(frozen=True)
class Arch:
    """A benchmarked architecture: `build(scratch, layers)` makes its processor and config."""

    name: str
    family: str
    published_layers: tuple[int, int]  # (text, vision)
    dims: str  # for the report
    _make: Callable[[Path, int, int], tuple[Any, Any]]

    @property
    def family_spec(self) -> Any:
        from pagelens.models.families import get_family

        return get_family(self.family)

    def build(self, scratch: Path, layers: int | None = None) -> BenchModel:
        """Processor + config with at most `layers` layers in each tower (None: the published depth)."""
        text, vision = (min(layers, n) if layers else n for n in self.published_layers)
        processor, config = self._make(Path(scratch) / self.name, text, vision)
        return BenchModel(self, processor, config, text, vision)


def _tiny_processor(family: str, scratch: Path) -> Any:
    from pagelens.models.families import get_family
    from pagelens.testing import build_tiny_checkpoint

    directory = build_tiny_checkpoint(family, scratch / "tiny")
    _, processor_class = get_family(family).classes()
    return processor_class.from_pretrained(directory), directory


def _colqwen2_5(scratch: Path, text_layers: int, vision_layers: int) -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig

    processor, _ = _tiny_processor("colqwen2_5", scratch)
    processor.image_processor.size = {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS}
    tokenizer = processor.tokenizer
    fullatt = [i for i in (7, 15, 23, 31) if i < vision_layers] or [vision_layers - 1]
    config = Qwen2_5_VLConfig(
        text_config={**QWEN_TEXT, "num_hidden_layers": text_layers},
        vision_config={**QWEN_VISION, "depth": vision_layers, "fullatt_block_indexes": fullatt},
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        architectures=["ColQwen2_5"],
    )
    return processor, config


def _colmodernvbert(scratch: Path, text_layers: int, vision_layers: int) -> tuple[Any, Any]:
    from colpali_engine.models import ColModernVBertProcessor
    from transformers import Idefics3ImageProcessor, ModernVBertConfig

    tiny, _ = _tiny_processor("colmodernvbert", scratch)
    tokenizer = tiny.tokenizer
    tile_patches = (MODERNVBERT_TILE_EDGE // MODERNVBERT_VISION["patch_size"]) ** 2
    processor = ColModernVBertProcessor(
        image_processor=Idefics3ImageProcessor(
            do_image_splitting=True,
            size={"longest_edge": MODERNVBERT_PAGE_EDGE},
            max_image_size={"longest_edge": MODERNVBERT_TILE_EDGE},
        ),
        tokenizer=tokenizer,
        image_seq_len=tile_patches // MODERNVBERT_PIXEL_SHUFFLE**2,
    )
    token = tokenizer.convert_tokens_to_ids
    config = ModernVBertConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "vision_use_head": False,
            "num_hidden_layers": vision_layers,
            **MODERNVBERT_VISION,
        },
        text_config={
            "model_type": "modernbert",
            "num_hidden_layers": text_layers,
            "max_position_embeddings": 8192,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "cls_token_id": token("[CLS]"),
            "sep_token_id": token("[SEP]"),
            **MODERNVBERT_TEXT,
        },
        pixel_shuffle_factor=MODERNVBERT_PIXEL_SHUFFLE,
        image_token_id=token("<image>"),
    )
    return processor, config


def _colpali(scratch: Path, text_layers: int, vision_layers: int) -> tuple[Any, Any]:
    from colpali_engine.models import ColPaliProcessor
    from transformers import PaliGemmaConfig, SiglipImageProcessor

    tiny, _ = _tiny_processor("colpali", scratch)
    image_tokens = (PALIGEMMA_IMAGE_EDGE // PALIGEMMA_VISION["patch_size"]) ** 2
    processor = ColPaliProcessor(
        image_processor=SiglipImageProcessor(
            size={"height": PALIGEMMA_IMAGE_EDGE, "width": PALIGEMMA_IMAGE_EDGE},
            resample=3,
            image_seq_length=image_tokens,
            do_rescale=True,
            rescale_factor=1 / 255,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        ),
        tokenizer=tiny.tokenizer,
    )
    tokenizer = processor.tokenizer
    token_ids = {name: getattr(tokenizer, name) for name in ("pad_token_id", "bos_token_id", "eos_token_id")}
    config = PaliGemmaConfig(
        text_config={"model_type": "gemma", "num_hidden_layers": text_layers, **PALIGEMMA_TEXT, **token_ids},
        vision_config={
            "model_type": "siglip_vision_model",
            "num_hidden_layers": vision_layers,
            "image_size": PALIGEMMA_IMAGE_EDGE,
            "vision_use_head": False,
            **PALIGEMMA_VISION,
        },
        image_token_index=processor.image_token_id,
        vocab_size=PALIGEMMA_TEXT["vocab_size"],
        projection_dim=PALIGEMMA_TEXT["hidden_size"],
        hidden_size=PALIGEMMA_TEXT["hidden_size"],
        **token_ids,
    )
    return processor, config


def _tiny(family: str) -> Callable[[Path, int, int], tuple[Any, Any]]:
    def make(scratch: Path, text_layers: int, vision_layers: int) -> tuple[Any, Any]:
        from transformers import AutoConfig

        processor, directory = _tiny_processor(family, scratch)
        return processor, AutoConfig.from_pretrained(directory)

    return make


ARCHS: dict[str, Arch] = {
    arch.name: arch
    for arch in (
        Arch(
            "colqwen2.5-3b",
            "colqwen2_5",
            (36, 32),
            "ColQwen2.5-3B: text 2048 hidden / 11008 MLP / 16 heads / 2 kv heads; vision 1280 / 3420 / 16 heads; "
            "pages up to 768 visual tokens",
            _colqwen2_5,
        ),
        Arch(
            "colmodernvbert",
            "colmodernvbert",
            (22, 12),
            "ColModernVBert: ModernBERT text 768 hidden / 1152 MLP / 12 heads; SigLIP vision 768 / 3072 / 12 heads, "
            "512-pixel tiles of 64 tokens, pages up to 2048 pixels",
            _colmodernvbert,
        ),
        Arch(
            "colpali-3b",
            "colpali",
            (18, 27),
            "ColPali v1.3 (PaliGemma-3B): Gemma text 2048 hidden / 16384 MLP / 8 heads / 1 kv head; SigLIP vision "
            "1152 / 4304 / 16 heads; pages resized to 448 pixels, 1024 image tokens",
            _colpali,
        ),
        Arch("tiny-colqwen2.5", "colqwen2_5", (2, 2), "tiny ColQwen2.5 (tests)", _tiny("colqwen2_5")),
        Arch("tiny-colmodernvbert", "colmodernvbert", (2, 2), "tiny ColModernVBert (tests)", _tiny("colmodernvbert")),
        Arch("tiny-colpali", "colpali", (2, 2), "tiny ColPali (tests)", _tiny("colpali")),
    )
}
PUBLISHED = ("colqwen2.5-3b", "colmodernvbert", "colpali-3b")


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[name]


def forward_flops(model: torch.nn.Module, inputs: Any, **forward_kwargs: Any) -> float:
    """FLOPs of one forward pass on `inputs` (with `forward_kwargs`), counted by torch's FlopCounterMode
    (matmuls + attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs, **forward_kwargs)
    return float(counter.get_total_flops())
