"""The answer model's server on Modal, as plain functions (no `modal` import): vLLM's
OpenAI-compatible server command, and the pagelens settings that point `/ask` at it.

vLLM serves `POST /v1/chat/completions` with `image_url` parts, which is what pagelens' OpenAI
generator sends (rag/openai_generator.py). Its key is the pagelens API key of the container's key
secret, which a shell hands to vLLM as `VLLM_API_KEY` (never on the command line, where `ps` would
show it; and no Python here reads the environment: Settings does that).
"""

from __future__ import annotations

import json

from pagelens.deploy.modal_settings import ModalSettings
from pagelens.settings import Settings

VLLM_VERSION = "0.33.0"
VLLM_PORT = 8000


def vllm_command(deploy: ModalSettings, *, download_dir: str) -> list[str]:
    """`vllm serve` for `deploy.llm_model`: as many images per prompt as `/ask` sends at most
    (`llm_max_images`, pages of one ask), weights kept in the cache volume (`download_dir`), an
    optional quantization (e.g. "awq", "fp8") and context length."""
    if not deploy.llm_model:
        raise ValueError("PAGELENS_MODAL_LLM_MODEL names no answer model")
    command = [
        "vllm", "serve", deploy.llm_model,
        "--host", "0.0.0.0", "--port", str(VLLM_PORT),
        "--served-model-name", deploy.llm_model,
        "--limit-mm-per-prompt", json.dumps({"image": deploy.llm_max_images, "video": 0}),
        "--max-model-len", str(deploy.llm_max_model_len),
        "--download-dir", download_dir,
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    if deploy.llm_quantization:
        command += ["--quantization", deploy.llm_quantization]
    return command


# PAGELENS_API_KEY, else the legacy SERVICE_API_KEY: the order Settings.api_key reads them in
KEY_FROM_SECRET = 'export VLLM_API_KEY="${PAGELENS_API_KEY:-${SERVICE_API_KEY:-}}"; exec "$@"'


def keyed_launch(command: list[str]) -> list[str]:
    """`command` run by a shell that first sets VLLM_API_KEY from the key secret's variable."""
    return ["sh", "-c", KEY_FROM_SECRET, "vllm-with-key", *command]


def with_answer_server(settings: Settings, server_url: str, deploy: ModalSettings) -> Settings:
    """`settings` with `/ask` answered by the vLLM server at `server_url` (its web endpoint's base
    URL), authenticated with the same API key pagelens itself serves with."""
    return settings.model_copy(
        update={
            "llm_url": server_url.rstrip("/") + "/v1",
            "llm_model": deploy.llm_model,
            "llm_api_key": settings.api_key,
        }
    )
