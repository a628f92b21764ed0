"""The registry of model families pagelens serves, all implemented by colpali-engine.

A family pairs a colpali-engine model class with its processor class. A checkpoint's family is
detected from its `config.json`: first the `architectures` entry (vidore and ModernVBERT
checkpoints name the colpali-engine class there), then the backbone `model_type`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pagelens.errors import UnknownModelFamily


@dataclass(frozen=True)
class Family:
    """One colpali-engine model family.

    `multi_vector` families return `(n_tokens, 128)` per input; single-vector (Bi*) ones `(dim,)`.
    `model_types` are the backbone `model_type` values of its checkpoints; `default_for_model_type`
    marks the family chosen when a config names only the backbone. `forward_kwargs` go to every
    forward call, `key_mapping` to `from_pretrained`. `queries_as_suffix` marks query tokens with
    `token_type_ids = 1` (PaliGemma's "suffix", attended causally): see PALIGEMMA_QUERY_NOTE.
    """

    name: str
    model_class: str
    processor_class: str
    model_types: tuple[str, ...]
    multi_vector: bool
    aliases: tuple[str, ...] = ()
    default_for_model_type: bool = False
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    key_mapping: Mapping[str, str] | None = None
    queries_as_suffix: bool = False

    def classes(self) -> tuple[type, type]:
        """Import and return `(model_class, processor_class)` from `colpali_engine.models`."""
        module = importlib.import_module("colpali_engine.models")
        return getattr(module, self.model_class), getattr(module, self.processor_class)

    def from_pretrained(self, directory: Any, **kwargs: Any) -> Any:
        """`model_class.from_pretrained(directory, **kwargs)`, with this family's weight-name mapping."""
        model_class, _ = self.classes()
        if self.key_mapping is not None:
            kwargs.setdefault("key_mapping", dict(self.key_mapping))
        return model_class.from_pretrained(directory, **kwargs)


# BiQwen2, BiQwen2_5 and BiGemma3 (colpali-engine 0.3.18) read a `_checkpoint_conversion_mapping`
# that transformers 5 no longer defines on their backbones, and crash unless `key_mapping` is given.
# An empty mapping is enough: transformers still applies its own per-model_type renames on top.
EXPLICIT_NO_RENAMES: dict[str, str] = {}

# ColPali/BiPali run PaliGemmaForConditionalGeneration and read its hidden states; by default it also
# computes logits over the 257k-token vocabulary at every position (about 1 TFLOP and 1 GB per page at
# the published size) that nobody reads. One position's logits leave the hidden states unchanged.
LAST_LOGIT_ONLY = {"logits_to_keep": 1}

# PALIGEMMA_QUERY_NOTE. transformers 5 gives PaliGemma's text model bidirectional attention. A query
# carries no token_type_ids, and then the attention it gets depends on the backend and the batch: eager
# attention, and sdpa in a padded batch, attend causally; sdpa on a lone unpadded query attends
# bidirectionally (0.1-0.3 max difference on the tiny model). Marking query tokens as the "suffix"
# (token_type_ids = 1) gives causal attention everywhere, equal to colpali-engine's eager forward of
# that query alone, whatever the batch. Pages carry token_type_ids = 0 (prefix) and are unaffected.


FAMILIES: tuple[Family, ...] = (
    Family("colqwen2_5", "ColQwen2_5", "ColQwen2_5_Processor", ("qwen2_5_vl",), True,
           aliases=("colqwen2.5",), default_for_model_type=True),
    Family("biqwen2_5", "BiQwen2_5", "BiQwen2_5_Processor", ("qwen2_5_vl",), False, aliases=("biqwen2.5",),
           key_mapping=EXPLICIT_NO_RENAMES),
    Family("colqwen2", "ColQwen2", "ColQwen2Processor", ("qwen2_vl",), True, default_for_model_type=True),
    Family("biqwen2", "BiQwen2", "BiQwen2Processor", ("qwen2_vl",), False, key_mapping=EXPLICIT_NO_RENAMES),
    Family("colqwen3", "ColQwen3", "ColQwen3Processor", ("qwen3_vl",), True, default_for_model_type=True),
    Family("biqwen3", "BiQwen3", "BiQwen3Processor", ("qwen3_vl",), False),
    Family("colpali", "ColPali", "ColPaliProcessor", ("paligemma",), True, default_for_model_type=True,
           forward_kwargs=LAST_LOGIT_ONLY, queries_as_suffix=True),
    # BiPaliProcessor takes (*args, **kwargs), from which transformers 5 cannot tell its components, so it
    # loads without a tokenizer; ColPaliProcessor is the same processor with an explicit signature.
    Family("bipali", "BiPali", "ColPaliProcessor", ("paligemma",), False, forward_kwargs=LAST_LOGIT_ONLY,
           queries_as_suffix=True),
    Family("colidefics3", "ColIdefics3", "ColIdefics3Processor", ("idefics3",), True,
           aliases=("colsmol",), default_for_model_type=True),
    Family("biidefics3", "BiIdefics3", "BiIdefics3Processor", ("idefics3",), False, aliases=("bismol",)),
    Family("colmodernvbert", "ColModernVBert", "ColModernVBertProcessor", ("modernvbert",), True,
           default_for_model_type=True),
    Family("bimodernvbert", "BiModernVBert", "BiModernVBertProcessor", ("modernvbert",), False),
    Family("bigemma3", "BiGemma3", "BiGemmaProcessor3", ("gemma3",), False,
           aliases=("netraembed",), default_for_model_type=True, key_mapping=EXPLICIT_NO_RENAMES),
    Family("colgemma3", "ColGemma3", "ColGemmaProcessor3", ("gemma3",), True),
)  # fmt: skip

_BY_NAME: dict[str, Family] = {}
for _family in FAMILIES:
    for _key in (_family.name, *_family.aliases):
        _BY_NAME[_key] = _family
_BY_CLASS = {f.model_class: f for f in FAMILIES}


def supported_families() -> list[str]:
    """Family names, in registry order."""
    return [f.name for f in FAMILIES]


def get_family(name: str) -> Family:
    """The family called `name` (or one of its aliases), case-insensitive."""
    family = _BY_NAME.get(name.lower().replace("-", "_"))
    if family is None:
        raise UnknownModelFamily(f"unknown model family {name!r}; supported: {', '.join(supported_families())}")
    return family


def detect_family(config: Mapping[str, Any], *, source: str = "model") -> Family:
    """The family of a checkpoint from its parsed `config.json`.

    `architectures` wins when it names a colpali-engine class; otherwise the backbone `model_type`
    selects that backbone's default family (the multi-vector one, or BiGemma3 for Gemma 3).
    """
    for architecture in config.get("architectures") or ():
        if architecture in _BY_CLASS:
            return _BY_CLASS[architecture]
    model_type = config.get("model_type")
    for family in FAMILIES:
        if family.default_for_model_type and model_type in family.model_types:
            return family
    raise UnknownModelFamily(
        f"{source}: cannot tell the model family from config.json "
        f"(model_type={model_type!r}, architectures={config.get('architectures')!r}); "
        f"pass family= one of: {', '.join(supported_families())}"
    )
