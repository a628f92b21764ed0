"""The embedding engine: dynamic batching across callers over one model."""

from pagelens.engine.batcher import Backend, Engine, is_out_of_memory
from pagelens.engine.config import EngineConfig, EngineStats
from pagelens.engine.results import ItemTiming, item_timing

__all__ = ["Backend", "Engine", "EngineConfig", "EngineStats", "ItemTiming", "is_out_of_memory", "item_timing"]
