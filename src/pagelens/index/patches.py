"""A page's patch layout as the stores keep it: the image-patch grid and which of the page's stored
rows are patch tokens, so a similarity map is drawn from the stored vectors, nothing re-embedded.

    {"grid": [n_x, n_y], "rows": [[start, count], ...]}     (models/patches.py computes it)

It is the `patches` field of the page's payload: a few dozen integers (one run for Qwen pages,
one per tile for Idefics3/ModernVBert pages), never a row mask. Pages stored before layouts existed,
pooled pages and single-vector pages have none. A layout is checked against the page's row count
before it is stored (an ingest or a snapshot import), so a stored one always fits its page.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pagelens.errors import InvalidInput

PATCHES_KEY = "patches"
MAX_GRID_SIDE = 4096


def _count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_layout(layout: Any, rows: int) -> dict[str, Any]:
    """`layout` as stored (plain ints, a fresh dict) if it fits a page of `rows` rows: a grid of two
    positive sides, runs in order, not overlapping, inside the page, covering n_x * n_y rows.
    InvalidInput saying what is wrong otherwise."""
    if not isinstance(layout, dict) or set(layout) != {"grid", "rows"}:
        raise InvalidInput(f"a patch layout is {{'grid': [n_x, n_y], 'rows': [[start, count], ...]}}, not {layout!r}")
    grid, runs = layout["grid"], layout["rows"]
    if not (isinstance(grid, list | tuple) and len(grid) == 2 and all(_count(s, 1) for s in grid)):
        raise InvalidInput(f"a patch layout's grid must be two positive counts, got {grid!r}")
    if max(grid) > MAX_GRID_SIDE:
        raise InvalidInput(f"a patch layout's grid {list(grid)} is over {MAX_GRID_SIDE} patches a side")
    if not isinstance(runs, list | tuple) or not runs:
        raise InvalidInput(f"a patch layout's rows must be a non-empty list of [start, count], got {runs!r}")
    end, total = 0, 0
    for run in runs:
        if not (isinstance(run, list | tuple) and len(run) == 2 and _count(run[0], end) and _count(run[1], 1)):
            raise InvalidInput(f"a patch layout's row run {run!r} is not [start, count] after row {end}")
        end = run[0] + run[1]
        total += run[1]
    if end > rows:
        raise InvalidInput(f"a patch layout's rows reach row {end}; the page has {rows}")
    if total != grid[0] * grid[1]:
        raise InvalidInput(
            f"a patch layout's rows count {total} patches; its {grid[0]}x{grid[1]} grid has {grid[0] * grid[1]}"
        )
    return {"grid": [int(grid[0]), int(grid[1])], "rows": [[int(start), int(count)] for start, count in runs]}


def patch_mask(layout: dict[str, Any], rows: int) -> np.ndarray:
    """`(rows,)` bool: True on the page's patch rows."""
    mask = np.zeros(rows, dtype=bool)
    for start, count in layout["rows"]:
        mask[start : start + count] = True
    return mask


def split_page(page: Any) -> tuple[np.ndarray, dict[str, Any] | None]:
    """A page as a store's `add_document` takes it: its vectors, or `(vectors, layout or None)`."""
    if isinstance(page, tuple):
        vectors, layout = page
        return vectors, layout
    return page, None
