"""Resolving model references: local directories, LoRA adapters, and hub errors while offline."""

from __future__ import annotations

import json

import pytest

from pagelens.errors import ModelLoadError
from pagelens.models.checkpoints import hub_token, resolve_checkpoint


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def test_local_merged_checkpoint(tmp_path):
    _write(tmp_path / "m" / "config.json", {"model_type": "qwen2_5_vl"})
    _write(tmp_path / "m" / "preprocessor_config.json", {})
    resolved = resolve_checkpoint(str(tmp_path / "m"))
    assert resolved.weights_dir == tmp_path / "m" and resolved.adapter_dir is None
    assert resolved.processor_dir == tmp_path / "m" and resolved.config["model_type"] == "qwen2_5_vl"


def test_adapter_resolves_its_base_and_keeps_its_own_processor(tmp_path):
    _write(tmp_path / "base" / "config.json", {"model_type": "paligemma"})
    _write(tmp_path / "base" / "tokenizer_config.json", {})
    _write(tmp_path / "lora" / "adapter_config.json", {"base_model_name_or_path": str(tmp_path / "base")})
    resolved = resolve_checkpoint(str(tmp_path / "lora"))
    assert resolved.weights_dir == tmp_path / "base" and resolved.adapter_dir == tmp_path / "lora"
    assert resolved.processor_dir == tmp_path / "base", "adapter without processor files uses the base's"
    _write(tmp_path / "lora" / "preprocessor_config.json", {})
    assert resolve_checkpoint(str(tmp_path / "lora")).processor_dir == tmp_path / "lora"


def test_broken_checkpoints_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_checkpoint(str(tmp_path / "empty"))
    _write(tmp_path / "a" / "adapter_config.json", {})
    with pytest.raises(ModelLoadError, match="base_model_name_or_path"):
        resolve_checkpoint(str(tmp_path / "a"))


def test_missing_hub_model_while_offline_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelLoadError) as raised:
        resolve_checkpoint("vidore/colqwen2.5-v0.2")
    message = str(raised.value)
    assert "vidore/colqwen2.5-v0.2" in message and "HF_HUB_OFFLINE" in message and "HF_HOME" in message


def test_hub_token_reads_the_seed_variable_too(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HUGGINGFACE_TOKEN", "hf_seed")
    assert hub_token() == "hf_seed"
    monkeypatch.setenv("HF_TOKEN", "hf_main")
    assert hub_token() == "hf_main"
