"""Family detection from config.json, overrides, and the error for unknown models."""

from __future__ import annotations

import pytest

from pagelens.errors import UnknownModelFamily
from pagelens.models.families import FAMILIES, detect_family, get_family, supported_families


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "qwen2_5_vl", "architectures": ["ColQwen2_5"]}, "colqwen2_5"),
        ({"model_type": "qwen2_5_vl", "architectures": ["BiQwen2_5"]}, "biqwen2_5"),
        ({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"]}, "colqwen2_5"),
        ({"model_type": "qwen2_vl"}, "colqwen2"),
        ({"model_type": "paligemma", "architectures": ["ColPali"]}, "colpali"),
        ({"model_type": "paligemma", "architectures": ["BiPali"]}, "bipali"),
        ({"model_type": "idefics3", "architectures": ["ColIdefics3"]}, "colidefics3"),
        ({"model_type": "modernvbert", "architectures": ["ColModernVBert"]}, "colmodernvbert"),
        ({"model_type": "modernvbert", "architectures": ["BiModernVBert"]}, "bimodernvbert"),
        ({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}, "bigemma3"),
        ({"model_type": "gemma3", "architectures": ["ColGemma3"]}, "colgemma3"),
    ],
)
def test_detects_family_from_architectures_then_model_type(config, expected):
    assert detect_family(config).name == expected


def test_unknown_model_lists_supported_families():
    with pytest.raises(UnknownModelFamily) as raised:
        detect_family({"model_type": "bert", "architectures": ["BertModel"]}, source="bert-base")
    message = str(raised.value)
    assert "bert-base" in message and "model_type='bert'" in message
    for name in ("colqwen2_5", "colpali", "colmodernvbert", "bigemma3"):
        assert name in message


def test_aliases_and_case_resolve_and_unknown_names_fail():
    assert get_family("ColSmol").name == "colidefics3"
    assert get_family("colqwen2.5").name == "colqwen2_5"
    assert get_family("NetraEmbed").name == "bigemma3"
    with pytest.raises(UnknownModelFamily, match="supported"):
        get_family("colbert")


def test_every_family_names_real_colpali_engine_classes():
    for family in FAMILIES:
        model_class, processor_class = family.classes()
        assert model_class.__name__ == family.model_class
        assert hasattr(processor_class, "process_images") and hasattr(processor_class, "process_queries")
    assert len(supported_families()) == len(FAMILIES)
