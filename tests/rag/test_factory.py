"""build_generator: which answer model the settings describe; the runtime owns and closes it."""

from __future__ import annotations

import sys
import types

from pagelens.rag.factory import build_generator
from pagelens.rag.openai_generator import OpenAIGenerator
from pagelens.service import Runtime
from pagelens.settings import Settings


def test_no_llm_settings_no_generator():
    assert build_generator(Settings(model="fake")) is None


def test_an_llm_url_is_the_openai_generator_with_the_settings(monkeypatch):
    monkeypatch.setenv("PAGELENS_LLM_API_KEY", "sk-from-env")
    settings = Settings(model="fake", llm_url="http://127.0.0.1:9/v1/", llm_model="qwen", llm_timeout=7,
                        llm_images="off")  # fmt: skip
    generator = build_generator(settings)
    assert isinstance(generator, OpenAIGenerator) and generator.model == "qwen" and generator.timeout == 7
    assert generator.base_url == "http://127.0.0.1:9/v1" and generator._api_key == "sk-from-env"
    assert generator.accepts_images is False
    assert "sk-from-env" not in repr(settings)


def test_an_llm_model_without_url_loads_the_in_process_vlm_with_the_device_rules(monkeypatch):
    loaded = {}

    class FakeVLM:
        @classmethod
        def load(cls, model, **options):
            loaded.update(model=model, **options)
            return cls()

    module = types.ModuleType("pagelens.rag.local_vlm")
    module.TransformersVLM = FakeVLM
    monkeypatch.setitem(sys.modules, "pagelens.rag.local_vlm", module)
    settings = Settings(model="fake", llm_model="/models/tiny-vlm", device="cpu", dtype="float32", attn="sdpa",
                        threads=2, hf_token="hf_x")  # fmt: skip
    assert isinstance(build_generator(settings), FakeVLM)
    assert loaded == {"model": "/models/tiny-vlm", "device": "cpu", "dtype": "float32", "attn": "sdpa",
                      "threads": 2, "token": "hf_x"}  # fmt: skip


def test_the_runtime_builds_its_generator_once_and_closes_it():
    closed = []

    class Recording(OpenAIGenerator):
        async def aclose(self):
            closed.append(True)

    runtime = Runtime(Settings(model="fake"), generator=Recording("http://127.0.0.1:9/v1", model="m"))
    assert runtime.load_generator() is runtime.generator and runtime.asks.generator() is runtime.generator
    runtime.close()
    assert closed == [True] and runtime.generator is None
    built = Runtime(Settings(model="fake", llm_url="http://127.0.0.1:9/v1"))
    assert built.generator is None and isinstance(built.load_generator(), OpenAIGenerator)
    assert built.load_generator() is built.generator
    built.close()
