"""Tiny random-weight checkpoints of the real architectures, built offline, for tests and smoke runs.

    build_tiny_checkpoint("colqwen2_5", "/tmp/tiny")                # merged checkpoint
    build_tiny_checkpoint("colpali", "/tmp/tiny-lora", adapter=True)  # LoRA adapter + base/

Each checkpoint has the family's real model class, real processor and a tiny trained BPE
tokenizer with the family's special tokens, and loads back through `from_pretrained`.

    build_tiny_vlm("/tmp/tiny-vlm")   # a Qwen2.5-VL chat model for pagelens.rag.TransformersVLM
"""

from __future__ import annotations

from pathlib import Path

from pagelens.errors import UnknownModelFamily
from pagelens.models.families import get_family
from pagelens.testing._variants import Builder


def build_tiny_vlm(out_dir: str | Path, *, backbone: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Write a tiny random-weight chat VLM (`qwen2_5_vl` or `qwen2_vl`: the `*ForConditionalGeneration`
    model, its processor with a chat template, a generation config) into `out_dir`; see testing/_vlm.py."""
    from pagelens.testing._vlm import build_tiny_vlm as build

    return build(out_dir, backbone=backbone, seed=seed)  # type: ignore[arg-type]


def tiny_builders() -> dict[str, Builder]:
    """Family name -> builder writing a merged tiny checkpoint into a directory."""
    from pagelens.testing import _gemma, _idefics, _qwen

    return {**_qwen.BUILDERS, **_gemma.BUILDERS, **_idefics.BUILDERS}


def tiny_families() -> list[str]:
    """Families that have a tiny-checkpoint builder."""
    return list(tiny_builders())


def build_tiny_checkpoint(family: str, out_dir: str | Path, *, adapter: bool = False, seed: int = 0) -> Path:
    """Write a tiny checkpoint of `family` into `out_dir` and return that directory.

    With `adapter`, the directory holds a LoRA adapter (random, non-zero deltas on every linear
    layer; `adapter_config.json` + processor files) whose base model is written to `out_dir/base`,
    as vidore publishes its checkpoints.
    """
    name = get_family(family).name
    builders = tiny_builders()
    if name not in builders:
        raise UnknownModelFamily(f"no tiny builder for {name!r}; available: {', '.join(builders)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not adapter:
        builders[name](out, seed)
        return out
    base = out / "base"
    builders[name](base, seed)
    _write_lora_adapter(name, base, out, seed)
    return out


def _write_lora_adapter(family: str, base: Path, out: Path, seed: int) -> None:
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    family_spec = get_family(family)
    _, processor_class = family_spec.classes()
    model = family_spec.from_pretrained(base, dtype=torch.float32)
    _tie_meta_output_head(model)
    torch.manual_seed(seed + 1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    adapter_config_path = out / "adapter_config.json"
    adapter_config = json.loads(adapter_config_path.read_text())
    adapter_config["base_model_name_or_path"] = str(base.resolve())
    adapter_config_path.write_text(json.dumps(adapter_config, indent=2))
    processor_class.from_pretrained(base).save_pretrained(out)


def _tie_meta_output_head(model) -> None:
    """ColPali/BiPali leave their tied `lm_head` unloaded (meta) under transformers 5, which peft cannot
    save around; point it at the input embeddings, as the tie intends."""
    for name, parameter in list(model.named_parameters()):
        if parameter.is_meta and name.endswith("lm_head.weight"):
            model.get_submodule(name.rpartition(".")[0]).weight = model.get_input_embeddings().weight
