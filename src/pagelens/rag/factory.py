"""The settings' answer model: `build_generator(settings) -> Generator | None`.

llm_url set              -> OpenAIGenerator (llm_model names the server's model, else its first)
llm_model, no llm_url    -> TransformersVLM loaded in this process (pagelens.rag.local_vlm), on
                            the embedder's device rules (device, dtype, attention, threads)
neither                  -> None: /ask answers 501 naming these flags
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pagelens.rag.generator import Generator

if TYPE_CHECKING:
    from pagelens.settings import Settings

HOW_TO_CONFIGURE = (
    "no answer model is configured: start pagelens with --llm-url (an OpenAI-compatible server, e.g. "
    "http://127.0.0.1:8001/v1, with --llm-model naming its model and --llm-api-key its key) or with "
    "--llm-model alone (a vision-language model loaded in this process); or set PAGELENS_LLM_URL / "
    "PAGELENS_LLM_MODEL / PAGELENS_LLM_API_KEY"
)


def build_generator(settings: Settings) -> Generator | None:
    """The generator the settings describe, loaded (the in-process model too), or None."""
    images = settings.llm_images == "on"
    if settings.llm_url:
        from pagelens.rag.openai_generator import OpenAIGenerator

        return OpenAIGenerator(
            settings.llm_url, model=settings.llm_model, api_key=settings.llm_api_key, timeout=settings.llm_timeout,
            accepts_images=images,
        )  # fmt: skip
    if settings.llm_model:
        from pagelens.rag.local_vlm import TransformersVLM

        return TransformersVLM.load(
            settings.llm_model, device=settings.device, dtype=settings.dtype, attn=settings.attn,
            threads=settings.threads, token=settings.hf_token,
        )  # fmt: skip
    return None
