"""One settings object for the service: command-line flags and `PAGELENS_*` environment variables.

Built once at start-up and passed down. The seeds' variable names are honoured as fallbacks:
COLPALI_MODEL_ID (seed 002) for the model, SERVICE_API_KEY (seed 001) for the key, CPU_THREADS
(seed 002) for torch threads.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pagelens.codecs.images import DEFAULT_MAX_IMAGE_PIXELS
from pagelens.codecs.text import DEFAULT_MAX_QUERY_CHARS
from pagelens.engine.config import EngineConfig

DEFAULT_MODEL = "ModernVBERT/colmodernvbert-merged"  # seed 002's default


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGELENS_", extra="ignore")

    # model
    model: str = Field(default="", description="Hub id or local directory")
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"
    family: str | None = None
    revision: str | None = None
    threads: int | None = None
    pool_factor: int | None = None
    # opt-in model variants (pagelens.models.variants): int8 dynamic linears on CPU; regional torch.compile
    quantize: Literal["none", "int8"] = "none"
    compile: bool = False

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    log_level: str = "info"

    # collections (Qdrant Edge shards and uploaded files); default: the per-user data directory
    data_dir: str = ""
    pdf_dpi: int = 150
    # a Qdrant server or cluster for the pages instead of Edge (collection c is `<prefix>c` there)
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_prefix: str = "pagelens_"

    # limits
    max_body_bytes: int = 64 * 1024 * 1024
    max_inputs_per_request: int = 256
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS

    # engine (None: the engine's per-device default)
    max_batch_images: int | None = None
    max_batch_queries: int = EngineConfig.max_batch_queries
    max_batch_tokens: int = EngineConfig.max_batch_tokens
    max_wait_ms: float = EngineConfig.max_wait_ms
    max_queued_items: int = EngineConfig.max_queued_items
    retry_after_seconds: int = 1

    @model_validator(mode="after")
    def _apply_seed_fallbacks(self) -> Settings:
        if not self.model:
            self.model = os.environ.get("COLPALI_MODEL_ID") or DEFAULT_MODEL
        if self.api_key is None:
            self.api_key = os.environ.get("SERVICE_API_KEY") or None
        if not self.data_dir:
            import platformdirs

            self.data_dir = platformdirs.user_data_dir("pagelens")
        if self.threads is None and os.environ.get("CPU_THREADS"):
            self.threads = int(os.environ["CPU_THREADS"])
        return self

    @property
    def loopback_only(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def engine_overrides(self) -> dict[str, object]:
        """EngineConfig fields set here (the rest keep the per-device defaults)."""
        overrides: dict[str, object] = {
            "max_batch_queries": self.max_batch_queries,
            "max_batch_tokens": self.max_batch_tokens,
            "max_wait_ms": self.max_wait_ms,
            "max_queued_items": self.max_queued_items,
            "max_image_pixels": self.max_image_pixels,
            "max_query_chars": self.max_query_chars,
        }
        if self.max_batch_images is not None:
            overrides["max_batch_images"] = self.max_batch_images
        return overrides
