"""Attention for CPUs in bfloat16, a block of query rows at a time through plain matmuls.

torch's CPU `scaled_dot_product_attention` runs bfloat16 at float32 speed on AVX512-BF16 cores
(~180 GFLOP/s of the ~410 the matmuls reach), and SigLIP's 1024-patch tiles spent a third of
ColModernVBert's page time in it. Here the scores of a few heads x `ROW_BLOCK` query rows are
one batched oneDNN matmul, small enough to stay in cache through the softmax and the product
with the values: the same arithmetic as transformers' eager attention (scores in the input
dtype, softmax accumulated in float32), at 2-2.4x sdpa's speed on those tiles
(docs/benchmarks.md).

Registered with transformers as the attention implementation `CPU_BLOCKED`. Calls it does not
cover (causal attention without a mask, dropout, short sequences, caches, position biases,
accelerators) go to transformers' sdpa function unchanged, so a model loaded with it behaves as
with sdpa everywhere else.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_BLOCKED = "cpu_blocked"
# Query rows scored at once: 4 heads x 256 rows x 1024 keys of bfloat16 scores are 2 MiB, what
# measured fastest on SigLIP's tiles (the full 1024 rows at once ran 2x slower: 24 MiB of scores).
ROW_BLOCK = 256
HEADS_PER_BLOCK = 4
# Below this many query rows sdpa's kernel is as fast and the Python loop would cost more.
MIN_QUERY_ROWS = 256
# float32 inputs run faster in sdpa's kernel (0.81x blocked on SigLIP's tiles): only bfloat16 is
# blocked.
BLOCKED_DTYPES = (torch.bfloat16,)


def register() -> str:
    """Make `CPU_BLOCKED` a valid `attn_implementation` (masks built as for sdpa); idempotent."""
    AttentionInterface.register(CPU_BLOCKED, cpu_blocked_attention_forward)
    AttentionMaskInterface.register(CPU_BLOCKED, sdpa_mask)
    return CPU_BLOCKED


def cpu_blocked_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: `query` `(batch, heads, q_len, head_dim)`, `key`
    and `value` `(batch, kv_heads, kv_len, head_dim)`, `attention_mask` None, boolean (True
    attends) or additive, broadcastable to `(batch, heads, q_len, kv_len)`. Returns
    `((batch, q_len, heads, head_dim) contiguous, None)`."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if not _covers(query, key, attention_mask, dropout, causal, kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return blocked_attention(query, key, value, attention_mask, scale), None


def blocked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(query @ key^T * scale + mask) @ value over `(batch, heads, len, head_dim)` tensors of
    one dtype (`key`/`value` with as many heads as `query`); `(batch, q_len, heads, head_dim)`."""
    batch, heads, q_len, _ = query.shape
    out = torch.empty(batch, q_len, heads, value.shape[-1], dtype=query.dtype, device=query.device)
    step = _heads_per_block(heads)
    for b in range(batch):
        for h in range(0, heads, step):
            # Contiguous copies of this block's keys and values: the matmuls read them once per
            # row block, and strided they run ~15% slower.
            keys_t = key[b, h : h + step].contiguous().transpose(-1, -2)
            values = value[b, h : h + step].contiguous()
            for r in range(0, q_len, ROW_BLOCK):
                rows = slice(r, min(r + ROW_BLOCK, q_len))
                scores = torch.matmul(query[b, h : h + step, rows] * scale, keys_t)
                if mask is not None:
                    _apply_mask(scores, _mask_block(mask, b, h, step, rows))
                weights = torch.softmax(scores, dim=-1)
                out[b, rows, h : h + step] = torch.matmul(weights, values).transpose(0, 1)
    return out


def _covers(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float,
    causal: bool,
    kwargs: dict[str, Any],
) -> bool:
    """Whether `blocked_attention` computes this call as sdpa would (else sdpa runs it)."""
    return (
        query.device.type == "cpu"
        and query.dtype in BLOCKED_DTYPES
        and key.dtype == query.dtype
        and query.shape[2] >= MIN_QUERY_ROWS
        and query.shape[0] == key.shape[0]  # sdpa would broadcast a batch of one
        and query.shape[1] % key.shape[1] == 0
        and dropout == 0.0
        and not (causal and mask is None)
        and (mask is None or mask.dim() == 4)
        and kwargs.get("position_bias") is None
        and kwargs.get("cache") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
    )


def _heads_per_block(heads: int) -> int:
    """The largest divisor of `heads` up to `HEADS_PER_BLOCK`, so a block never mixes batch items."""
    return next(n for n in range(min(HEADS_PER_BLOCK, heads), 0, -1) if heads % n == 0)


def _mask_block(mask: torch.Tensor, b: int, h: int, step: int, rows: slice) -> torch.Tensor:
    """The `(heads or 1, rows or 1, kv_len)` part of a 4-D mask broadcastable over batch, heads and
    query rows."""
    batch_index = b if mask.shape[0] > 1 else 0
    heads = slice(h, h + step) if mask.shape[1] > 1 else slice(0, 1)
    return mask[batch_index, heads, rows if mask.shape[2] > 1 else slice(0, 1)]


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> None:
    """Masks `scores` in place: a boolean mask's False entries get the dtype's lowest finite value
    (a fully masked row becomes uniform, never NaN), an additive one is added."""
    if mask.dtype == torch.bool:
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    else:
        scores.add_(mask.to(scores.dtype))
