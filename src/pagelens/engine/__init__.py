"""The embedding engine: dynamic batching across callers over one model."""

from pagelens.engine.batcher import Backend, Engine, EngineConfig, EngineStats, is_out_of_memory

__all__ = ["Backend", "Engine", "EngineConfig", "EngineStats", "is_out_of_memory"]
