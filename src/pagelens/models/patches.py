"""Similarity maps over colpali-engine's interpretability helpers: what a page's rows are on the
image's patch grid (recorded at ingest), the query's tokens, and the maps themselves.

A page's *patch layout* is a JSON-able dict, computed from the processor's own output for that page:

    {"grid": [n_x, n_y], "rows": [[start, count], ...]}

`grid` is `processor.get_n_patches(...)` (n_x patches across the page's width, n_y down its
height); `rows` are the runs of the page's stored rows (its embedding's rows, in order) that are
image-patch tokens: the processor's image-token mask (`get_image_mask`; Idefics3 and ModernVBert
split pages into tiles and use `get_local_image_mask`, which leaves out the global tile). Qwen pages
have one run; tiled pages one run per tile (tile markers sit between them). `sum(count) == n_x * n_y`.

Which processors give a layout: those of the Qwen2/2.5/3 families (`spatial_merge_size` from the
model), ColPali (`patch_size`), and the Idefics3 split-image ones (ColIdefics3, ColModernVBert).
Others (ColGemma3, the Bi* single-vector families) give None: no map can be drawn for their pages.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

PatchLayout = dict[str, Any]


def _runs(mask: torch.Tensor) -> list[list[int]]:
    """`[[start, count], ...]` of the True runs of a 1-D boolean mask."""
    runs: list[list[int]] = []
    for index in mask.nonzero().flatten().tolist():
        if runs and runs[-1][0] + runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, 1])
    return runs


def is_tiled(processor: Any) -> bool:
    """Idefics3-style processors (tiles of `image_seq_len` tokens plus a global tile), whose maps
    need the processor's own `get_similarity_maps_from_embeddings` (it reorders tiles spatially)."""
    return hasattr(processor, "get_local_image_mask") and hasattr(processor, "rearrange_image_embeddings")


def n_patches(processor: Any, model: Any, image_size: tuple[int, int]) -> tuple[int, int] | None:
    """`(n_x, n_y)` for a page of PIL size `(width, height)`, as colpali-engine's processor computes
    it, or None when the processor has no grid this module knows how to ask for."""
    width, height = image_size
    parameters = inspect.signature(processor.get_n_patches).parameters
    if is_tiled(processor):  # this mixin reads (height, width)
        if parameters["patch_size"].default is inspect.Parameter.empty:  # ColIdefics3: pixels per token side
            tile = processor.image_processor.max_image_size["longest_edge"]
            return tuple(processor.get_n_patches((height, width), tile // math.isqrt(processor.image_seq_len)))
        return tuple(processor.get_n_patches((height, width)))
    if "spatial_merge_size" in parameters and getattr(model, "spatial_merge_size", None):
        return tuple(processor.get_n_patches((width, height), spatial_merge_size=model.spatial_merge_size))
    if "patch_size" in parameters:  # ColPali: the vision tower's patch size
        patch_size = getattr(model, "patch_size", None) or getattr(
            getattr(model, "config", None), "vision_config", None
        )
        patch_size = getattr(patch_size, "patch_size", patch_size)
        if isinstance(patch_size, int) and patch_size > 0:
            return tuple(processor.get_n_patches((width, height), patch_size=patch_size))
    return None


def patch_layout(processor: Any, model: Any, image: Image.Image, features: Any) -> PatchLayout | None:
    """The layout of one page from the processor's output for it (`features`: batch of one, as
    `process_images` returned it). None when the processor gives no grid or its mask disagrees with
    the grid (logged: the page gets no similarity map)."""
    if not hasattr(processor, "get_image_mask"):
        return None
    try:
        grid = n_patches(processor, model, image.size)
        if grid is None:
            return None
        mask = (processor.get_local_image_mask if is_tiled(processor) else processor.get_image_mask)(features)[0]
        mask = mask[features["attention_mask"][0].bool()]  # the rows the page's embedding keeps
    except Exception as error:  # a processor without the helpers this needs: no map, never a failed ingest
        log.warning("no patch layout for %s: %r", type(processor).__name__, error)
        return None
    if int(mask.sum()) != grid[0] * grid[1]:
        log.warning("%s: %d image rows for a %dx%d grid; no patch layout", type(processor).__name__,
                    int(mask.sum()), *grid)  # fmt: skip
        return None
    return {"grid": [int(grid[0]), int(grid[1])], "rows": _runs(mask)}


def query_tokens(processor: Any, text: str) -> list[tuple[int, str]]:
    """`(row, token)` for each of the query's rows that is a word piece of `text`: the rows of
    `process_queries([text])` under its attention mask (the rows of the query's embedding), less
    the augmentation tokens (`query_augmentation_token`, repeated after the text) and the
    tokenizer's special tokens (pad, bos, eos, cls, sep). A token is shown as the tokenizer decodes
    it alone (" invoice", "s")."""
    tokenizer = processor.tokenizer
    features = processor.process_queries([text])
    ids = features["input_ids"][0][features["attention_mask"][0].bool()].tolist()
    dropped = set(tokenizer.all_special_ids)
    augmentation = getattr(processor, "query_augmentation_token", None)
    if augmentation:
        dropped.add(tokenizer.convert_tokens_to_ids(augmentation))
    return [(row, tokenizer.decode([token])) for row, token in enumerate(ids) if token not in dropped]


@functools.cache
def _colpali_maps_function() -> Callable[..., list[torch.Tensor]]:
    """colpali-engine's `get_similarity_maps_from_embeddings`, from its module file:
    `colpali_engine.interpretability`'s `__init__` also imports its plotting helpers, which need
    matplotlib and seaborn (its `interpretability` extra); the maps need only einops."""
    import colpali_engine

    path = Path(colpali_engine.__file__).parent / "interpretability" / "similarity_map_utils.py"
    spec = importlib.util.spec_from_file_location("pagelens_colpali_similarity_map_utils", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.get_similarity_maps_from_embeddings


def similarity_maps(processor: Any, page: torch.Tensor, query: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """colpali-engine's similarity maps of a `(q, dim)` query over a `(n, dim)` page (float32 tensors):
    `(q, n_x, n_y)` float32, one map per query row. Tiled processors use their own method, which
    puts tiles in place; the others the interpretability module's function."""
    mask = torch.zeros(len(page), dtype=torch.bool)
    for start, count in layout["rows"]:
        mask[start : start + count] = True
    grid = (layout["grid"][0], layout["grid"][1])
    compute = processor.get_similarity_maps_from_embeddings if is_tiled(processor) else _colpali_maps_function()
    (maps,) = compute(page[None], query[None], grid, mask[None])
    return maps
