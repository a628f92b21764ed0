"""One settings object for the service: command-line flags and environment variables.

Built once at start-up and passed down; no other module reads the environment (Modal's deploy-time
variables have their own class, `pagelens.deploy.modal_settings`). A setting `x` is read from
`PAGELENS_X`, except these, whose first name is the canonical one and the rest legacy aliases from
the seeds, read only when the names before them are unset:

    model     PAGELENS_MODEL, COLPALI_MODEL_ID (seed 002)
    api_key   PAGELENS_API_KEY, SERVICE_API_KEY (seed 001)
    threads   PAGELENS_CPU_THREADS, PAGELENS_THREADS, CPU_THREADS (seed 002)
    hf_token  HF_TOKEN (huggingface_hub's own name), HUGGINGFACE_TOKEN (the seeds)

A constructor argument (a command-line flag) wins over every variable, and an empty variable counts
as unset, so it never hides a name after it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pagelens.codecs.images import DEFAULT_MAX_IMAGE_PIXELS
from pagelens.codecs.text import DEFAULT_MAX_QUERY_CHARS
from pagelens.engine.config import EngineConfig

DEFAULT_MODEL = "ModernVBERT/colmodernvbert-merged"  # seed 002's default
DEFAULT_LLM_MAX_PIXELS = 1_000_000  # about a megapixel: a letter page at ~100 dpi


class Settings(BaseSettings):
    # validate_by_name: `Settings(model=...)` sets a field whose variables are aliases. (pydantic-settings
    # then also reads `PAGELENS_<field>` last, which for hf_token means PAGELENS_HF_TOKEN.)
    model_config = SettingsConfigDict(
        env_prefix="PAGELENS_", extra="ignore", validate_by_name=True, env_ignore_empty=True
    )

    # model
    model: str = Field(
        default=DEFAULT_MODEL,
        validation_alias=AliasChoices("PAGELENS_MODEL", "COLPALI_MODEL_ID"),
        description="Hub id or local directory",
    )
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"
    family: str | None = None
    revision: str | None = None
    threads: int | None = Field(
        default=None, validation_alias=AliasChoices("PAGELENS_CPU_THREADS", "PAGELENS_THREADS", "CPU_THREADS")
    )
    pool_factor: int | None = None
    # opt-in model variants (pagelens.models.variants): int8 dynamic linears on CPU; regional torch.compile
    quantize: Literal["none", "int8"] = "none"
    compile: bool = False
    # token for gated/private hub checkpoints (None: huggingface_hub's own login, if any)
    hf_token: str | None = Field(
        default=None, validation_alias=AliasChoices("HF_TOKEN", "HUGGINGFACE_TOKEN"), repr=False
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = Field(default=None, validation_alias=AliasChoices("PAGELENS_API_KEY", "SERVICE_API_KEY"))
    # serve with no key at all: the app refuses to start without a key unless this says so
    no_auth: bool = False
    # /docs and /openapi.json readable without the key (the API itself still needs it)
    public_docs: bool = False
    log_level: str = "info"
    # slow clients: a request body that stops arriving for this long is a 408; an idle keep-alive
    # connection closes after keep_alive_seconds; on shutdown, requests in flight get this long to finish
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    # a connection whose request headers have not all arrived this long after its first byte is closed
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    keep_alive_seconds: int = Field(default=5, gt=0)
    shutdown_timeout_seconds: int = Field(default=30, gt=0)

    # collections (Qdrant Edge shards and uploaded files); default: the per-user data directory
    data_dir: str = ""
    pdf_dpi: int = 150
    # uploads (`POST /collections/{c}/documents`): their own body limit (not max_body_bytes), a page
    # limit checked before any page renders, this many ingest jobs at once, finished jobs kept this long
    max_document_bytes: int = Field(default=1 << 30, ge=1)
    max_document_pages: int = Field(default=5000, ge=1)
    ingest_workers: int = Field(default=2, ge=1)
    job_retention_hours: float = Field(default=168.0, gt=0)
    # PDF pages render in this many worker processes (two ingests and a page image at once), each
    # page within the time limit: a slower one is refused (422 naming it) and its worker killed
    pdf_workers: int = Field(default=3, ge=1)
    pdf_page_timeout_seconds: float = Field(default=30.0, gt=0)
    # office documents (DOCX, PPTX, XLSX, ODT, ODP, ODS) become PDFs through LibreOffice's soffice
    # when it is installed, each conversion within this limit (a slower one is a 422)
    office_timeout_seconds: float = Field(default=120.0, gt=0)
    # a Qdrant server or cluster for the pages instead of Edge (collection c is `<prefix>c` there)
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_prefix: str = "pagelens_"
    # live recall (index/recall.py): this fraction of fast searches is re-run exactly in the
    # background to measure each collection's recall@k, and its default prefetch adapts to keep
    # that at target_recall
    recall_sample: float = 0.02
    target_recall: float = 0.95

    # answers (`POST /collections/{c}/ask`): an OpenAI-compatible server at llm_url (vLLM, Ollama,
    # llama.cpp, OpenAI; llm_model names its model, else the server's first), or, with llm_model and no
    # llm_url, a vision-language model loaded in this process. Pages go to it as JPEG images of at most
    # llm_max_pixels, or (llm_images off, for a text-only model) as their PDF text layers. A generator
    # silent for llm_timeout seconds (no first byte, or no next piece of the answer) is a 504.
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = Field(default=None, repr=False)
    llm_images: Literal["on", "off"] = "on"
    llm_max_pixels: int = Field(default=DEFAULT_LLM_MAX_PIXELS, ge=64 * 64)
    llm_timeout: float = Field(default=120.0, gt=0)
    # identical asks of an unchanged collection are answered from this many cached answers, each kept this long
    answer_cache_size: int = Field(default=256, ge=0)
    answer_cache_ttl_seconds: float = Field(default=3600.0, gt=0)
    # query embeddings kept for searches and asks of a query seen before (about 10 KB each)
    query_cache_size: int = Field(default=1024, ge=0)

    # limits
    max_body_bytes: int = 64 * 1024 * 1024
    max_score_bytes: int = 16 * 1024 * 1024  # /score's page embeddings are JSON float lists: costly to parse
    max_inputs_per_request: int = 256
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS

    # engine (None: the engine's default for the device and the model family)
    max_batch_images: int | None = None
    max_batch_queries: int = EngineConfig.max_batch_queries
    max_batch_tokens: int = EngineConfig.max_batch_tokens
    max_wait_ms: float = EngineConfig.max_wait_ms
    max_queued_items: int = EngineConfig.max_queued_items
    max_queued_pixels: int = EngineConfig.max_queued_pixels  # image pixels in flight (admission, 413/429)
    retry_after_seconds: int = 1

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, key: str | None) -> str | None:
        if key is not None and not key.strip():
            raise ValueError("the API key is empty or only whitespace; give a real one (or --no-auth to serve without)")
        return key

    @field_validator("llm_images", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, bool):
            return "on" if value else "off"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("recall_sample")
    @classmethod
    def _sample_rate(cls, rate: float) -> float:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"PAGELENS_RECALL_SAMPLE is the fraction of fast searches re-run exactly to measure recall: "
                f"between 0 (never) and 1 (every one), got {rate}"
            )
        return rate

    @field_validator("target_recall")
    @classmethod
    def _target(cls, target: float) -> float:
        if not 0.5 <= target <= 1.0:
            raise ValueError(
                f"PAGELENS_TARGET_RECALL is the fast mode's recall@k to keep: between 0.5 and 1, got {target}"
            )
        return target

    @model_validator(mode="after")
    def _default_data_dir(self) -> Settings:
        if not self.data_dir:
            import platformdirs

            self.data_dir = platformdirs.user_data_dir("pagelens")
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
            "max_queued_pixels": self.max_queued_pixels,
            "max_image_pixels": self.max_image_pixels,
            "max_query_chars": self.max_query_chars,
        }
        if self.max_batch_images is not None:
            overrides["max_batch_images"] = self.max_batch_images
        return overrides
