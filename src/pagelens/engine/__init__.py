"""The embedding engine: dynamic batching across callers over one model.

Names load on first use, so `pagelens.engine.config` (read by the settings) imports no torch: the
command line's `--url` commands start without it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pagelens.engine.batcher import Backend, Engine, is_out_of_memory
    from pagelens.engine.config import EngineConfig, EngineStats
    from pagelens.engine.results import ItemTiming, item_timing

_WHERE = {
    "Backend": "batcher",
    "Engine": "batcher",
    "is_out_of_memory": "batcher",
    "EngineConfig": "config",
    "EngineStats": "config",
    "ItemTiming": "results",
    "item_timing": "results",
}
__all__ = ["Backend", "Engine", "EngineConfig", "EngineStats", "ItemTiming", "is_out_of_memory", "item_timing"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pagelens.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pagelens.engine.{_WHERE[name]}"), name)
