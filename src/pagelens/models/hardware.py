"""Choosing device, dtype, attention implementation and CPU threads from what is present.

Nothing here fails when an accelerator is absent: "auto" resolves to what the machine has.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import torch

from pagelens.errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
# cpu_blocked: models/cpu_attention.py (bfloat16 on a CPU; sdpa for the calls it does not cover).
ATTENTION_IMPLEMENTATIONS = ("flash_attention_2", "cpu_blocked", "sdpa", "eager")


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matmuls natively (AMX or AVX512-BF16), so bf16 beats float32."""
    if platform.machine().lower() in ("arm64", "aarch64") and platform.system() == "Darwin":
        return False
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` -> cuda, else mps, else cpu; an explicit device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} requested but MPS is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS, and on CPU bf16 where
    the CPU has native bf16, else float32."""
    if dtype != "auto":
        try:
            return DTYPES[dtype]
        except KeyError:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def attention_candidates(attn: str, device: torch.device, dtype: torch.dtype, model_class: type) -> list[str]:
    """Attention implementations to try, best first.

    `auto`: FlashAttention 2 when installed, on CUDA, in a half dtype and supported by the model;
    on a CPU in bfloat16, the blocked attention where the model supports sdpa (its fallback); then
    sdpa where the model supports it; eager last. An explicit choice is tried alone.
    """
    if attn != "auto":
        if attn not in ATTENTION_IMPLEMENTATIONS:
            raise ModelLoadError(f"unknown attention {attn!r}; use auto, {', '.join(ATTENTION_IMPLEMENTATIONS)}")
        if attn == "cpu_blocked":
            _register_cpu_blocked()
        return [attn]
    candidates = []
    if (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and flash_attention_available()
        and getattr(model_class, "_supports_flash_attn", False)
    ):
        candidates.append("flash_attention_2")
    if getattr(model_class, "_supports_sdpa", True):
        if device.type == "cpu" and dtype == torch.bfloat16:
            candidates.append(_register_cpu_blocked())
        candidates.append("sdpa")
    candidates.append("eager")
    return candidates


def _register_cpu_blocked() -> str:
    from pagelens.models import cpu_attention  # imports transformers: only when a model loads

    return cpu_attention.register()


def load_with_best_attention(
    load: Callable[[str], T], attn: str, device: torch.device, dtype: torch.dtype, model_class: type, what: str
) -> tuple[T, str]:
    """`(load(attention), attention)` for the first of `attention_candidates` that loads; an explicit
    `attn` that fails, or every candidate failing, is `ModelLoadError` naming `what` and why."""
    errors = []
    for attention in attention_candidates(attn, device, dtype, model_class):
        try:
            return load(attention), attention
        except (ValueError, ImportError) as error:
            if attn != "auto":
                raise ModelLoadError(f"cannot load {what} with {attention} attention: {error}") from error
            errors.append(f"{attention}: {error}")
            log.info("attention %s unavailable for %s: %s", attention, what, error)
    raise ModelLoadError(f"cannot load {what} with any attention: {'; '.join(errors)}")


def configure_cpu_threads(threads: int | None) -> None:
    """Set torch's intra-op threads to `threads`; `None` keeps torch's default (Settings reads the variables)."""
    if threads is not None:
        if threads < 1:
            raise ModelLoadError(f"CPU threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
