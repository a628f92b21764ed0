"""What the tiny-checkpoint builders share: a family variant and the builder functions made from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Builder = Callable[[Path, int], None]


@dataclass(frozen=True)
class Variant:
    """One family: which colpali-engine classes wrap which backbone."""

    model_class: str
    processor_class: str
    backbone: str


def make_builders(variants: dict[str, Variant], build: Callable[[Variant, Path, int], None]) -> dict[str, Builder]:
    """Family name -> `builder(out_dir, seed)` calling `build(variant, out_dir, seed)`."""

    def builder_for(variant: Variant) -> Builder:
        def builder(out_dir: Path, seed: int) -> None:
            build(variant, Path(out_dir), seed)

        builder.__name__ = f"build_{variant.model_class.lower()}"
        builder.__doc__ = f"Write a tiny {variant.model_class} checkpoint ({variant.backbone}) into `out_dir`."
        return builder

    return {name: builder_for(variant) for name, variant in variants.items()}
