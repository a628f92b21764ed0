"""Deploy-time settings of the Modal app: `PAGELENS_MODAL_*` variables of the `modal deploy` command.

Separate from `pagelens.settings.Settings` (what a running service reads) and importable without
the `modal` package. An empty variable counts as unset.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from pagelens.settings import DEFAULT_MODEL


class ModalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGELENS_MODAL_", extra="ignore", env_ignore_empty=True)

    app: str = "pagelens"  # app name; the cache volume is `<app>-hf-cache`
    gpu: str = "L40S"
    model: str = DEFAULT_MODEL  # default `model_name`; its weights are fetched into the volume at image build
    scaledown: int = 300  # seconds idle before a container stops
    min_containers: int = 0
    max_containers: int = 5
    timeout: int = 600  # seconds per request
    concurrency: int = 32  # requests one container serves at once
    gpu_snapshot: bool = True  # GPU memory snapshots: the model is restored already on the GPU
    hf_secret: str = "huggingface-secret"  # Modal secret holding HF_TOKEN
    key_secret: str = "pagelens-api-key"  # Modal secret holding PAGELENS_API_KEY or SERVICE_API_KEY
    qdrant_secret: str = "pagelens-qdrant"  # the fan-out's: PAGELENS_QDRANT_URL and PAGELENS_QDRANT_API_KEY
    fanout_containers: int = 20  # GPU containers the fan-out (modal_fanout.py) maps page batches over
    # the answer model (deploy/vllm_server.py): with llm_model set, `modal deploy` also brings up a
    # vLLM server class for it, and /ask answers through it
    llm_model: str = ""  # e.g. Qwen/Qwen2.5-VL-7B-Instruct; empty: no answer model
    llm_gpu: str = "L40S"
    llm_max_images: int = 5  # images per prompt vLLM accepts: the largest k an ask will use
    llm_max_model_len: int = 16384  # context length (each 1-megapixel page is ~1300 Qwen2.5-VL tokens)
    llm_quantization: str = ""  # vLLM --quantization (awq, gptq, fp8) for a quantized checkpoint
    llm_max_containers: int = 2
