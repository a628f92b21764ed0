"""Resolving model references: local directories, LoRA adapters, hub errors while offline, and the
hub token passed down from Settings."""

from __future__ import annotations

import json

import pytest

from pagelens.errors import ModelLoadError
from pagelens.models import embedder
from pagelens.models.checkpoints import resolve_checkpoint
from pagelens.settings import Settings


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
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # huggingface_hub's parsed flag decides, not the variable
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelLoadError) as raised:
        resolve_checkpoint("vidore/colqwen2.5-v0.2")
    message = str(raised.value)
    assert "vidore/colqwen2.5-v0.2" in message and "HF_HUB_OFFLINE is set" in message and "HF_HOME" in message


def test_the_token_authenticates_the_adapter_and_its_base(tmp_path, monkeypatch):
    import huggingface_hub

    _write(tmp_path / "base" / "config.json", {"model_type": "paligemma"})
    _write(tmp_path / "lora" / "adapter_config.json", {"base_model_name_or_path": "org/base"})
    downloads = []

    def snapshot_download(repo_id, *, revision=None, token=None, allow_patterns=None):
        downloads.append((repo_id, token))
        return str(tmp_path / ("lora" if repo_id == "org/lora" else "base"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")  # never read here
    resolve_checkpoint("org/lora", token="hf_given")
    assert downloads == [("org/lora", "hf_given"), ("org/base", "hf_given")]
    resolve_checkpoint("org/lora")
    assert downloads[2:] == [("org/lora", None), ("org/base", None)], "None: huggingface_hub's own login"


def test_the_settings_token_reaches_checkpoint_resolution(monkeypatch):
    from pagelens.service import load_embedder

    seen = []

    def resolve(reference, revision=None, token=None):
        seen.append((reference, token))
        raise ModelLoadError("stop here")

    monkeypatch.setattr(embedder, "resolve_checkpoint", resolve)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HUGGINGFACE_TOKEN", "hf_seed")
    with pytest.raises(ModelLoadError, match="stop here"):
        load_embedder(Settings(model="org/private"))
    with pytest.raises(ModelLoadError, match="stop here"):
        embedder.Embedder.load("org/other", token="hf_arg")
    assert seen == [("org/private", "hf_seed"), ("org/other", "hf_arg")]
