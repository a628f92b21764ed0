"""The Embedder: one loaded colpali-engine model and its processor, item-level preprocessing,
batch collation and a forward pass that returns each input's own vectors.

Preprocessing is per item so that each input's token count is known before batching (the
engine's token budget) and a bad input fails alone. `collate` pads items into one batch the way
the family's processor would (on the tokenizer's padding side; zeros for pixel tensors).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from pagelens.errors import ModelLoadError
from pagelens.models import hardware, variants
from pagelens.models.checkpoints import ResolvedCheckpoint, resolve_checkpoint
from pagelens.models.families import Family, detect_family, get_family
from pagelens.models.patches import PatchLayout, patch_layout, query_tokens, similarity_maps

log = logging.getLogger(__name__)

Kind = Literal["image", "query"]
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


@dataclass(frozen=True)
class EmbedderInfo:
    """What is loaded: `dim` is the vector width (128 for Col* models), `multi_vector` whether each
    input yields `(n_tokens, dim)` or `(dim,)`."""

    model: str
    family: str
    dim: int
    multi_vector: bool
    device: str
    dtype: str
    attention: str
    pool_factor: int | None = None
    quantize: str = "none"
    compiled: bool = False
    revision: str | None = None
    page_pixels: int | None = None  # pixels beyond which the processor shrinks a page (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """One preprocessed input: its processor tensors (batch dimension 1), its sequence length, and
    for a page its patch layout (models/patches.py; None when no similarity map can be drawn)."""

    kind: Kind
    features: dict[str, torch.Tensor]
    n_tokens: int
    layout: PatchLayout | None = None


class Embedder:
    """A loaded model + processor. Thread-compatible: one thread may run `forward` while others
    run `prepare_*` (the processor holds no per-call state).

    `quantize="int8"` and `compile=True` transform `model` in place (see pagelens.models.variants);
    int8 needs a float32 model on the CPU. Compiled models are warmed up here on the shapes serving
    will see (lone and batched queries and pages), so no request pays for compilation."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        family: Family,
        *,
        name: str,
        revision: str | None = None,
        attention: str,
        pool_factor: int | None = None,
        quantize: str = "none",
        compile: bool = False,
    ) -> None:
        quantize = variants.check_quantize(quantize)
        if quantize == "int8":
            parameter = next(model.parameters())
            variants.int8_compute_dtype(str(parameter.dtype).removeprefix("torch."), parameter.device)
            variants.quantize_int8(model)
        if compile:
            variants.compile_blocks(model)
        self.model = model
        self.processor = processor
        self.family = family
        self.pool_factor = pool_factor
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._padding_side = getattr(processor.tokenizer, "padding_side", "left")
        self._pad_token_id = processor.tokenizer.pad_token_id or 0
        self._pooler = None
        if pool_factor is not None:
            if not family.multi_vector:
                raise ModelLoadError(f"token pooling needs a multi-vector model; {family.name} is single-vector")
            if pool_factor < 2:
                raise ModelLoadError(f"pool factor must be >= 2, got {pool_factor}")
            from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

            self._pooler = HierarchicalTokenPooler()
        warm = self.forward(self.collate([self.prepare_query("warm up")]))[0]
        if compile:
            self._warm_up_compiled()
        self.info = EmbedderInfo(
            model=name,
            family=family.name,
            dim=int(warm.shape[-1]),
            multi_vector=family.multi_vector,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            attention=attention,
            pool_factor=pool_factor,
            quantize=quantize,
            compiled=compile,
            revision=revision,
            page_pixels=page_pixel_budget(processor),
        )

    def _warm_up_compiled(self) -> None:
        """Compile every graph serving needs now: batch size 1 and >1 (torch specializes size 1) for
        queries and pages, with two sequence lengths each so the graphs are the dynamic-shape ones."""
        started, graphs = time.perf_counter(), variants.compiled_graph_count()
        queries = [self.prepare_query(text) for text in ("warm up", "a longer warm-up query, with more tokens")]
        pages = [self.prepare_image(Image.new("RGB", size, "white")) for size in ((448, 448), (336, 560))]
        for items in ([queries[1]], queries, [pages[0]], [pages[1]], pages):
            self.forward(self.collate(items))
        log.info(
            "compile warm-up: %d graphs in %.1f s", variants.compiled_graph_count() - graphs,
            time.perf_counter() - started,
        )  # fmt: skip

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attn: str = "auto",
        revision: str | None = None,
        family: str | None = None,
        threads: int | None = None,
        pool_factor: int | None = None,
        quantize: str = "none",
        compile: bool = False,
        token: str | None = None,
    ) -> Embedder:
        """Load `model` (hub id or local directory, merged or LoRA adapter) for inference.

        `device`: auto|cpu|cuda[:n]|mps. `dtype`: auto|float32|bfloat16|float16. `attn`:
        auto|flash_attention_2|cpu_blocked|sdpa|eager. `family` overrides detection. `threads` sets torch's
        CPU threads (None: torch's choice). `pool_factor` turns on hierarchical
        token pooling of image embeddings. `quantize`: none|int8 (int8 dynamic linears, float32
        activations, CPU only). `compile`: torch.compile the repeated blocks, warmed up here.
        `token`: hub token for gated/private checkpoints (None: huggingface_hub's own login).
        """
        started = time.perf_counter()
        hardware.configure_cpu_threads(threads)
        checkpoint = resolve_checkpoint(model, revision, token=token)
        chosen = get_family(family) if family else detect_family(checkpoint.config, source=model)
        _, processor_class = chosen.classes()
        quantize = variants.check_quantize(quantize)
        torch_device = hardware.resolve_device(device)
        if quantize == "int8":
            torch_dtype = variants.int8_compute_dtype(dtype, torch_device)
        else:
            torch_dtype = hardware.resolve_dtype(dtype, torch_device)
        network, attention = _load_weights(checkpoint, chosen, torch_device, torch_dtype, attn)
        processor = _load_processor(processor_class, checkpoint)
        embedder = cls(
            network, processor, chosen, name=model, revision=revision, attention=attention, pool_factor=pool_factor,
            quantize=quantize, compile=compile,
        )  # fmt: skip
        log.info(
            "loaded %s (%s) on %s as %s (quantize %s, compile %s) with %s attention in %.1f s",
            model, chosen.name, torch_device, embedder.info.dtype, quantize, compile, attention,
            time.perf_counter() - started,
        )  # fmt: skip
        return embedder

    # ---------------------------------------------------------------- preprocessing
    def prepare_image(self, image: Image.Image) -> Prepared:
        """Run the family's image processor on one image; record its patch layout when its rows are
        kept as they are (a multi-vector model without token pooling)."""
        features = self.processor.process_images([image])
        prepared = self._prepared("image", features)
        if self.gives_patch_maps:
            prepared.layout = patch_layout(self.processor, self.model, image, features)
        return prepared

    # ---------------------------------------------------------------- similarity maps
    @property
    def gives_patch_maps(self) -> bool:
        """Whether pages embedded here keep one row per patch (multi-vector, not pooled)."""
        return self.family.multi_vector and self._pooler is None

    def query_tokens(self, text: str) -> list[tuple[int, str]]:
        """`(row, token)` of the query's word pieces (augmentation and special tokens left out)."""
        return query_tokens(self.processor, text)

    def similarity_maps(self, page: np.ndarray, query: np.ndarray, layout: PatchLayout) -> np.ndarray:
        """colpali-engine's maps of a `(q, dim)` query over a stored `(n, dim)` page with its layout:
        `(q, n_x, n_y)` float32 (models/patches.py)."""
        page_rows = torch.from_numpy(np.asarray(page, dtype=np.float32))
        query_rows = torch.from_numpy(np.asarray(query, dtype=np.float32))
        return similarity_maps(self.processor, page_rows, query_rows, layout).numpy()

    def prepare_query(self, text: str) -> Prepared:
        """Run the family's query processor (with its augmentation tokens) on one query."""
        features = self.processor.process_queries([text])
        prepared = self._prepared("query", features)
        if self.family.queries_as_suffix:
            prepared.features["token_type_ids"] = torch.ones_like(prepared.features["input_ids"])
        return prepared

    def _prepared(self, kind: Kind, features: Any) -> Prepared:
        # PaliGemma's processor adds `labels` to page inputs; passed on, the model would compute a
        # language-modelling loss over the whole vocabulary that nobody reads.
        tensors = {k: v for k, v in dict(features).items() if isinstance(v, torch.Tensor) and k != "labels"}
        return Prepared(kind, tensors, int(tensors["input_ids"].shape[1]))

    def collate(self, items: list[Prepared]) -> dict[str, torch.Tensor]:
        """Pad single-item features into one batch: sequence tensors on the tokenizer's padding side
        (input_ids with the pad id, masks with 0), every other tensor with zeros at the end of each dim."""
        if len(items) == 1:
            return dict(items[0].features)
        batch: dict[str, torch.Tensor] = {}
        seq_len = max(item.n_tokens for item in items)
        for key in items[0].features:
            tensors = [item.features[key] for item in items]
            if key in SEQUENCE_KEYS:
                pad_value = self._pad_token_id if key == "input_ids" else 0
                batch[key] = torch.cat([_pad_sequence(t, seq_len, pad_value, self._padding_side) for t in tensors])
            else:
                batch[key] = torch.cat(_pad_to_common_shape(tensors))
        return batch

    # ---------------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Embed a collated batch. Returns one float32 array per input: `(n_tokens, dim)` with only
        that input's rows (padding removed), or `(dim,)` for single-vector families."""
        on_device = {k: self._to_device(v) for k, v in batch.items()}
        with torch.inference_mode():
            output = self.model(**on_device, **self.family.forward_kwargs)
        output = output.float().cpu()
        if not self.family.multi_vector:
            return [row.numpy() for row in output]
        mask = batch["attention_mask"].bool()
        per_item = [output[i][mask[i]] for i in range(output.shape[0])]
        is_image = "pixel_values" in batch
        if self._pooler is not None and is_image:
            per_item = self._pooler.pool_embeddings(per_item, pool_factor=self.pool_factor, padding=False)
        return [np.ascontiguousarray(t.numpy()) for t in per_item]

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)


def _pad_sequence(tensor: torch.Tensor, length: int, value: int, side: str) -> torch.Tensor:
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    padding = torch.full((tensor.shape[0], missing, *tensor.shape[2:]), value, dtype=tensor.dtype)
    return torch.cat([padding, tensor] if side == "left" else [tensor, padding], dim=1)


def _pad_to_common_shape(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    target = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors), strict=True)]
    padded = []
    for tensor in tensors:
        pads: list[int] = []
        for size, want in zip(reversed(tensor.shape[1:]), reversed(target), strict=True):
            pads += [0, want - size]
        padded.append(torch.nn.functional.pad(tensor, pads) if any(pads) else tensor)
    return padded


def _load_weights(
    checkpoint: ResolvedCheckpoint, family: Family, device: torch.device, dtype: torch.dtype, attn: str
) -> tuple[torch.nn.Module, str]:
    """Load weights with the best attention implementation that works; merge a LoRA adapter if any."""
    model_class, _ = family.classes()
    network, attention = hardware.load_with_best_attention(
        lambda attention: family.from_pretrained(
            checkpoint.weights_dir,
            dtype=dtype,
            attn_implementation=attention,
            # Weights load straight onto the device; the model is never `.to()`-moved afterwards,
            # since ColPali/BiPali leave their unused, tied `lm_head` on the meta device.
            device_map=None if device.type == "cpu" else str(device),
        ),
        attn, device, dtype, model_class, checkpoint.reference,
    )  # fmt: skip
    if checkpoint.adapter_dir is not None:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, checkpoint.adapter_dir).merge_and_unload()
    return network.eval(), attention


def page_pixel_budget(processor: Any) -> int | None:
    """The most pixels of a page image the processor keeps: a larger page is shrunk before the model
    sees it, so rendering a PDF page beyond this costs time and gains nothing.

    Qwen2-VL processors resize within `max_pixels` (transformers 5 keeps it as `size["longest_edge"]`,
    a pixel count); Idefics3 / ModernVBert resize the longest side to `size["longest_edge"]` (pixels
    of a square of that side: an upper bound for any page); fixed-size processors (SigLIP, Gemma 3)
    use `height * width`. None for a processor this does not recognise."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if image_processor is None or size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    name = type(image_processor).__name__
    if name.startswith("Qwen2VL"):
        pixels = getattr(image_processor, "max_pixels", None) or get("max_pixels") or get("longest_edge")
    elif name.startswith("Idefics3"):
        pixels = get("longest_edge") and get("longest_edge") ** 2
    else:
        pixels = get("height") and get("width") and get("height") * get("width")
    return int(pixels) if pixels else None


def _load_processor(processor_class: type, checkpoint: ResolvedCheckpoint) -> Any:
    """The family's processor. transformers 5 picks the torchvision ("fast") image backend by default
    when torchvision is installed, as it is here."""
    return processor_class.from_pretrained(checkpoint.processor_dir)
