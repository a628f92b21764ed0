"""torch's sdpa against pagelens' blocked CPU attention on the attention calls of the served models.

    ./scripts/uv.sh run --frozen python scripts/time_cpu_attention.py [--rounds 5]

Each case is one attention call of a published architecture, on random bfloat16 query/key/value
handed over as attention modules hand them (transposed views of the projections), with the mask
the model passes. sdpa and `blocked_attention` take turns for `--rounds` rounds in one process (the
cores drift); prints the median milliseconds of each, sdpa's over blocked (above 1: blocked is
faster) and the largest absolute difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagelens.models.cpu_attention import blocked_attention


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    heads: int
    length: int
    head_dim: int
    band: int | None = None  # keys within this distance (ModernBERT's local layers)
    prefix_causal: bool = False  # causal after a bidirectional prefix (PaliGemma's text)


CASES = [
    Case("ColModernVBert vision: 13 SigLIP tiles of 1024 patches", 13, 12, 1024, 64),
    Case("ColPali vision: SigLIP-So400m, 1024 patches", 1, 16, 1024, 72),
    Case("ColQwen2.5 vision, full-attention layer: 2436 patches", 1, 16, 2436, 80),
    Case("ColModernVBert text, global layer: a page's 884 tokens", 1, 12, 884, 64),
    Case("ColModernVBert text, local layer (window 128)", 1, 12, 884, 64, band=64),
    Case("ColPali text: 1034 tokens, image prefix then causal", 1, 8, 1034, 256, prefix_causal=True),
]


def inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random bfloat16 query/key/value `(batch, heads, len, head_dim)` as views of one projection's
    output, and the case's boolean mask `(1, 1, len, len)` (None: every key)."""
    generator = torch.Generator().manual_seed(0)
    width = case.heads * case.head_dim
    packed = torch.randn(case.batch, case.length, 3 * width, generator=generator).to(torch.bfloat16)
    shape = (case.batch, case.length, case.heads, case.head_dim)
    q, k, v = (t.view(shape).transpose(1, 2) for t in packed.split(width, -1))
    positions = torch.arange(case.length)
    mask = None
    if case.band is not None:
        mask = (positions[:, None] - positions[None, :]).abs() <= case.band
    elif case.prefix_causal:
        mask = (positions[:, None] >= positions[None, :]) | (positions[None, :] < 1024)
    return q, k, v, None if mask is None else mask.view(1, 1, case.length, case.length)


def compare(case: Case, rounds: int) -> tuple[float, float, float]:
    """(sdpa ms, blocked ms, largest absolute difference) for one case, the two alternating."""
    q, k, v, mask = inputs(case)
    runs = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).contiguous(),
        "blocked": lambda: blocked_attention(q, k, v, mask, case.head_dim**-0.5),
    }
    outputs = {name: run() for name, run in runs.items()}  # also each one's untimed first call
    taken: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name in runs if round_ % 2 == 0 else list(runs)[::-1]:
            started = time.perf_counter()
            runs[name]()
            taken[name].append(time.perf_counter() - started)
    difference = (outputs["sdpa"].float() - outputs["blocked"].float()).abs().max().item()
    return statistics.median(taken["sdpa"]) * 1000, statistics.median(taken["blocked"]) * 1000, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, bfloat16, {args.rounds} alternating rounds, median ms")
    print(f"{'call':<58} {'sdpa':>8} {'blocked':>8} {'ratio':>6} {'max diff':>9}")
    for case in CASES:
        sdpa_ms, blocked_ms, difference = compare(case, args.rounds)
        print(f"{case.name:<58} {sdpa_ms:>8.1f} {blocked_ms:>8.1f} {sdpa_ms / blocked_ms:>6.2f} {difference:>9.4f}")


if __name__ == "__main__":
    main()
