"""Where a page forward's time goes, pages one at a time against a batch, per architecture.

    ./scripts/uv.sh run --frozen python scripts/profile_page_batching.py --arch colqwen2.5-3b --arch colmodernvbert

Times the forward the engine runs (the family's inputs and options) by parts: the vision tower's
attention and MLP blocks, the text model's attention and MLP blocks and
the rest (embeddings, patch merging, the projection, the processor's tensors) with forward hooks,
on `--pages` synthetic pages forwarded singly and as one batch, the two alternating for `--rounds`
rounds in one process (the cores drift). Prints milliseconds per page for each part and the
batch's time over the single pages' (below 1: batching helps that part).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from pagelens.bench.engine import needed_inputs
from pagelens.bench.models import get_arch, synthetic_page

PARTS = {  # a module whose dotted name matches is timed as that part (blocks, not their sub-layers)
    "vision attention": re.compile(r"(visual|vision_model|vision_tower)\..*\.(attn|self_attn)$"),
    "vision MLP": re.compile(r"(visual\.blocks|vision_model\.encoder|vision_tower\.encoder)\..*\.mlp$"),
    "text attention": re.compile(r"(language_model|text_model)\.layers\.\d+\.(attn|self_attn)$"),
    "text MLP": re.compile(r"(language_model|text_model)\.layers\.\d+\.mlp$"),
}


def hook_parts(model: torch.nn.Module, spent: dict[str, float]) -> None:
    """Add each matched module's wall time to `spent[part]` on every forward."""
    for name, module in model.named_modules():
        part = next((part for part, pattern in PARTS.items() if pattern.search(name)), None)
        if part is None:
            continue
        started: list[float] = []
        module.register_forward_pre_hook(lambda *_, started=started: started.append(time.perf_counter()))
        module.register_forward_hook(
            lambda *_, part=part, started=started: spent.__setitem__(
                part, spent[part] + time.perf_counter() - started.pop()
            )
        )


def profile(arch_name: str, layers: int, pages: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        bench_model = get_arch(arch_name).build(Path(scratch), layers)
        model, processor = bench_model.model("sdpa"), bench_model.processor
        images = [synthetic_page(seed) for seed in range(pages)]
        singles = [needed_inputs(processor.process_images([image])) for image in images]
        batch = needed_inputs(processor.process_images(images))
        options = bench_model.arch.family_spec.forward_kwargs  # as the engine calls it (ColPali: one logit)
        spent: dict[str, float] = defaultdict(float)
        hook_parts(model, spent)

        def forward_all(inputs: list) -> dict[str, float]:
            spent.clear()
            started = time.perf_counter()
            with torch.inference_mode():
                for one in inputs:
                    model(**one, **options)
            total = time.perf_counter() - started
            return {**spent, "rest": total - sum(spent.values()), "total": total}

        forward_all(singles[:1])  # kernel selection for the shapes, untimed
        forward_all([batch])
        taken: dict[str, list[dict[str, float]]] = {"single": [], "batch": []}
        for round_ in range(rounds):
            order = ("single", "batch") if round_ % 2 == 0 else ("batch", "single")
            for mode in order:
                taken[mode].append(forward_all(singles if mode == "single" else [batch]))
        print(f"\n{arch_name}, {bench_model.depth}, {pages} pages ({int(batch['input_ids'].shape[1])} tokens each)")
        print(f"{'part':<18} {'single ms/page':>15} {f'batch {pages} ms/page':>17} {'batch / single':>15}")
        for part in (*PARTS, "rest", "total"):
            single = statistics.median(sample.get(part, 0.0) for sample in taken["single"]) * 1000 / pages
            batched = statistics.median(sample.get(part, 0.0) for sample in taken["batch"]) * 1000 / pages
            print(f"{part:<18} {single:>15.0f} {batched:>17.0f} {batched / single:>15.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help="architectures (default: colqwen2.5-3b, colmodernvbert)")
    parser.add_argument("--layers", type=int, default=2, help="layers in each tower")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for arch_name in args.arch or ["colqwen2.5-3b", "colmodernvbert"]:
        profile(arch_name, args.layers, args.pages, args.rounds)


if __name__ == "__main__":
    main()
