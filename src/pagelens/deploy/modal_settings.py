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
