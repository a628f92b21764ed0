"""What callers get back from the engine: results in input order, per-item timings, output dtypes."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

OutputDtype = Literal["float32", "float16"]


@dataclass(frozen=True)
class ItemTiming:
    """Where one item's time went, in seconds: waiting (preprocessing + queue) and its batch's forward."""

    waited: float
    forward: float


def item_timing(future: Future) -> ItemTiming | None:
    """The timing the engine attached to a finished item's future (None if it never ran)."""
    return getattr(future, "pagelens_timing", None)


def item_layout(future: Future) -> dict[str, Any] | None:
    """The patch layout of a finished page's future (models/patches.py; None if it has none)."""
    return getattr(future, "pagelens_layout", None)


def convert(array: np.ndarray, dtype: OutputDtype) -> np.ndarray:
    return array if dtype == "float32" else array.astype(np.float16)


def collect(futures: list[Future], dtype: OutputDtype, return_exceptions: bool) -> list[Any]:
    results: list[Any] = []
    for future in futures:
        error = future.exception()
        if error is not None:
            if not return_exceptions:
                for other in futures:
                    other.cancel()
                raise error
            results.append(error)
        else:
            results.append(convert(future.result(), dtype))
    return results


async def acollect(futures: list[Future], dtype: OutputDtype, return_exceptions: bool) -> list[Any]:
    wrapped = [asyncio.wrap_future(future) for future in futures]
    try:
        done = await asyncio.gather(*wrapped, return_exceptions=return_exceptions)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return [item if isinstance(item, BaseException) else convert(item, dtype) for item in done]
