"""Opt-in model variants applied at load: int8 dynamic quantization and regional torch.compile.

int8 (`quantize="int8"`, CPU only): every `nn.Linear` of the backbone (language model, vision tower,
connector) becomes torch's dynamically quantized linear: weights int8 per output channel, activations
quantized per tensor (per call) at run time, matmuls on the x86 int8 kernels (AVX512-VNNI where present). Its
activations are float32, so the rest of the model runs in float32. The projection head (the wrapper's
own `nn.Linear`, e.g. `custom_text_proj`: hidden -> 128) stays in float32: it is <0.1% of the
FLOPs and writes the output vectors directly.

compile (`compile=True`): each repeated transformer block is wrapped in `torch.compile(dynamic=True)`
("regional" compilation: one graph per block class, reused by every layer and every sequence length,
instead of one whole-model graph that breaks at the processors' data-dependent steps). Blocks whose
attention is packed variable-length (`cu_seqlens`, Qwen's vision tower) split by data-dependent sizes
and would recompile per page shape; only their MLP is compiled.
"""

from __future__ import annotations

import inspect
import logging
import warnings

import torch

from pagelens.errors import ModelLoadError

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("none", "int8")
COMPILE_BACKEND = "inductor"  # tests swap in "aot_eager": same capture and guards, no C++ code generation


def check_quantize(quantize: str | None) -> str:
    """The validated quantization name (`None` -> "none"); anything else raises ModelLoadError."""
    value = (quantize or "none").lower()
    if value not in QUANTIZE_CHOICES:
        raise ModelLoadError(f"unknown quantize {quantize!r}; use {' or '.join(QUANTIZE_CHOICES)}")
    return value


def int8_compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype an int8-quantized model runs in: float32, on the CPU only.

    Refuses CUDA/MPS (torch's dynamic int8 linears have CPU kernels only) and a half dtype (their
    activations are float32), naming what to use instead."""
    if device.type != "cpu":
        raise ModelLoadError(
            f"quantize=int8 (dynamic int8 linears) runs on the CPU only, not on {device.type}; "
            "use --quantize none on GPUs (bf16/fp16 there is already fast), or --device cpu"
        )
    if dtype not in ("auto", "float32", "fp32"):
        raise ModelLoadError(
            f"quantize=int8 computes in float32 (int8 weights, float32 activations); got dtype {dtype!r}: "
            "use dtype auto or float32"
        )
    return torch.float32


def quantize_int8(model: torch.nn.Module) -> int:
    """Replace the backbone's `nn.Linear` layers by dynamic int8 ones, in place; return how many.

    Kept in float32: the model's direct `nn.Linear` children (the projection head) and layers left
    on the meta device (PaliGemma's unused tied `lm_head`)."""
    quantize_dynamic, per_channel = _quantize_dynamic()
    heads = {name for name, child in model.named_children() if isinstance(child, torch.nn.Linear)}
    targets = {
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and name not in heads and module.weight.device.type != "meta"
    }
    if not targets:
        raise ModelLoadError("quantize=int8: the model has no linear layers to quantize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(model, dict.fromkeys(targets, per_channel), dtype=torch.qint8, inplace=True)
    log.info("int8 dynamic quantization: %d linear layers (kept in float32: %s)", len(targets), sorted(heads))
    return len(targets)


def _quantize_dynamic():
    """torch's eager dynamic quantization and its per-output-channel weight config."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:  # deprecated upstream: a later torch may drop it
        raise ModelLoadError(f"quantize=int8 needs torch.ao.quantization.quantize_dynamic: {error}") from error
    return quantize_dynamic, per_channel_dynamic_qconfig


def compile_blocks(model: torch.nn.Module) -> list[str]:
    """Wrap each repeated block's forward in `torch.compile(dynamic=True)`, in place.

    A repeated block is an entry of an `nn.ModuleList` whose entries share one class (decoder layers,
    vision blocks). Returns the compiled modules' names (empty: nothing to compile)."""
    compiled = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1 or isinstance(module[0], torch.nn.Linear | torch.nn.ModuleList):
            continue
        for index, block in enumerate(module):
            target, suffix = block, ""
            if "cu_seqlens" in inspect.signature(block.forward).parameters:
                target, suffix = getattr(block, "mlp", None), ".mlp"
                if target is None:
                    continue
            target.compile(dynamic=True, backend=COMPILE_BACKEND)
            compiled.append(f"{name}.{index}{suffix}")
    log.info("torch.compile (dynamic shapes) on %d blocks", len(compiled))
    return compiled


def compiled_graph_count() -> int:
    """How many graphs dynamo has compiled in this process (for counting recompiles)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
