"""pagelens on Modal: the same FastAPI app as `pagelens serve`, on a GPU, scaling to zero.

    modal secret create huggingface-secret HF_TOKEN=hf_...          # gated/private models only
    modal secret create pagelens-api-key PAGELENS_API_KEY=<random key>  # or SERVICE_API_KEY (legacy)
    modal deploy src/pagelens/deploy/modal_app.py

Deploy-time settings are environment variables of the `modal deploy` command, read by
`ModalSettings` (deploy/modal_settings.py): PAGELENS_MODAL_APP (app name, "pagelens"),
PAGELENS_MODAL_GPU ("L40S"), PAGELENS_MODAL_MODEL (the default `model_name` parameter, whose weights
are fetched into the cache volume at image build), PAGELENS_MODAL_SCALEDOWN (seconds, 300),
PAGELENS_MODAL_MIN_CONTAINERS (0), PAGELENS_MODAL_MAX_CONTAINERS (5), PAGELENS_MODAL_TIMEOUT (600),
PAGELENS_MODAL_CONCURRENCY (32), PAGELENS_MODAL_GPU_SNAPSHOT (true: GPU memory snapshots, the model
is restored already on the GPU), PAGELENS_MODAL_HF_SECRET / PAGELENS_MODAL_KEY_SECRET (secret names
above).

The model loads in `@modal.enter(snap=True)` (captured by the snapshot, warmed up first); the
engine's threads start after restore, in `@modal.enter(snap=False)`.

With PAGELENS_MODAL_LLM_MODEL (a vision-language model, e.g. Qwen/Qwen2.5-VL-7B-Instruct) the same
deploy also brings up `AnswerServer`, vLLM's OpenAI-compatible server for it on its own GPU
(PAGELENS_MODAL_LLM_GPU), and the pagelens containers send `/ask` to it with their API key. Its
weights go into the same cache volume on first start; it has no memory snapshot (vLLM needs its
sleep mode for one), so its cold start is vLLM's load, minutes for a 7B model.
"""

# No `from __future__ import annotations`: Modal reads the parameter annotation as a real type.

from pathlib import Path

import modal

from pagelens.deploy.modal_settings import ModalSettings
from pagelens.deploy.vllm_server import VLLM_PORT, VLLM_VERSION, keyed_launch, vllm_command, with_answer_server
from pagelens.settings import Settings

DEPLOY = ModalSettings()
APP_NAME = DEPLOY.app
GPU = DEPLOY.gpu
MODEL = DEPLOY.model
SCALEDOWN_WINDOW = DEPLOY.scaledown
MIN_CONTAINERS = DEPLOY.min_containers
MAX_CONTAINERS = DEPLOY.max_containers
TIMEOUT = DEPLOY.timeout
CONCURRENCY = DEPLOY.concurrency
GPU_SNAPSHOT = DEPLOY.gpu_snapshot
HF_SECRET = DEPLOY.hf_secret
KEY_SECRET = DEPLOY.key_secret

CACHE_DIR = "/cache"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONTAINER_ENV = {
    "HF_HOME": f"{CACHE_DIR}/huggingface",
    "HF_HUB_CACHE": f"{CACHE_DIR}/huggingface/hub",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "TOKENIZERS_PARALLELISM": "false",
}

app = modal.App(APP_NAME)
cache_volume = modal.Volume.from_name(f"{APP_NAME}-hf-cache", create_if_missing=True)
secrets = [modal.Secret.from_name(HF_SECRET), modal.Secret.from_name(KEY_SECRET)]


def fetch_default_weights() -> None:
    """Image build step: download the default model (and, for an adapter, its base) into the volume."""
    from pagelens.service import fetch_model

    fetch_model(Settings(model=MODEL))
    cache_volume.commit()


# the package's files but bytecode: the web page's static files too (Modal copies only .py files by default)
SOURCE_IGNORE = ["**/__pycache__/**", "**/*.pyc"]

image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_sync(str(PROJECT_ROOT), frozen=True)
    .env(CONTAINER_ENV)
    .add_local_python_source("pagelens", copy=True, ignore=SOURCE_IGNORE)
    .run_function(fetch_default_weights, volumes={CACHE_DIR: cache_volume}, secrets=secrets)
)


if DEPLOY.llm_model:
    vllm_image = (
        modal.Image.debian_slim(python_version="3.12")
        .uv_pip_install(f"vllm=={VLLM_VERSION}", "pydantic-settings>=2.7")  # + this module's own imports
        .env(CONTAINER_ENV)
        .add_local_python_source("pagelens", copy=True, ignore=SOURCE_IGNORE)
    )

    @app.cls(
        image=vllm_image,
        gpu=DEPLOY.llm_gpu,
        volumes={CACHE_DIR: cache_volume},
        secrets=secrets,
        scaledown_window=SCALEDOWN_WINDOW,
        max_containers=DEPLOY.llm_max_containers,
        timeout=TIMEOUT,
    )
    @modal.concurrent(max_inputs=CONCURRENCY)
    class AnswerServer:
        """vLLM's OpenAI-compatible server for the answer model (PAGELENS_MODAL_LLM_MODEL)."""

        @modal.web_server(port=VLLM_PORT, startup_timeout=20 * 60)
        def serve(self) -> None:
            import subprocess

            command = vllm_command(DEPLOY, download_dir=f"{CACHE_DIR}/huggingface/hub")
            subprocess.Popen(keyed_launch(command))  # the key from the secret, as VLLM_API_KEY


def answer_server_url() -> str | None:
    """The deployed AnswerServer's base URL, or None when this deploy has no answer model."""
    if not DEPLOY.llm_model:
        return None
    return modal.Cls.from_name(APP_NAME, "AnswerServer")().serve.get_web_url()


def build_web_app(runtime):
    """The ASGI app a container serves: exactly `pagelens serve`'s app, over an already started runtime."""
    from pagelens.api import create_app

    return create_app(runtime=runtime)


@app.cls(
    image=image,
    gpu=GPU,
    volumes={CACHE_DIR: cache_volume},
    secrets=secrets,
    scaledown_window=SCALEDOWN_WINDOW,
    min_containers=MIN_CONTAINERS,
    max_containers=MAX_CONTAINERS,
    timeout=TIMEOUT,
    enable_memory_snapshot=GPU_SNAPSHOT,
    experimental_options={"enable_gpu_snapshot": True} if GPU_SNAPSHOT else None,
)
@modal.concurrent(max_inputs=CONCURRENCY)
class Pagelens:
    model_name: str = modal.parameter(default=MODEL)

    @modal.enter(snap=GPU_SNAPSHOT)  # snap=True needs snapshots enabled
    def load_model(self) -> None:
        """Load and warm the model (captured by the memory snapshot when snapshots are on). Every
        other setting comes from the container's PAGELENS_* variables, as for `pagelens serve`."""
        from pagelens.service import Runtime

        settings = Settings(model=self.model_name, host="0.0.0.0")
        server_url = answer_server_url()
        if server_url is not None:
            settings = with_answer_server(settings, server_url, DEPLOY)
        self.runtime = Runtime(settings)
        embedder = self.runtime.load_model()
        page = embedder.prepare_query("warm up")  # compile kernels before the snapshot
        embedder.forward(embedder.collate([page]))

    @modal.enter(snap=False)
    def start_engine(self) -> None:
        """Start the batching engine's threads in the restored container."""
        self.runtime.start()

    @modal.exit()
    def stop_engine(self) -> None:
        self.runtime.close()

    @modal.asgi_app()
    def web(self):
        return build_web_app(self.runtime)
