"""A tiny byte-level BPE tokenizer trained offline, carrying a family's special tokens.

The real checkpoints ship tokenizers of 50k-260k entries; tests need the same *behaviour*
(special tokens resolve to single ids, padding side, the family's prompt templates tokenize)
without the size. Training on a handful of sentences takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TRAINING_SENTENCES = (
    "Describe the image.",
    "What is the revenue of the company in 2023?",
    "Quarterly report: tables, charts and figures on every page.",
    "The quick brown fox jumps over the lazy dog.",
    "Late interaction scores each query token against every page token.",
    "User: Assistant: question answer document page retrieval",
    "Quelle est la population de Paris ? Wie hoch ist der Umsatz?",
    "0123456789 %$#@!&*()[]{}<>/\\|;:'\",.?-_=+",
)


def train_tiny_tokenizer(
    special_tokens: Sequence[str],
    *,
    unk_token: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    vocab_size: int = 400,
    add_bos_token: bool = False,
    padding_side: str = "left",
    model_max_length: int = 4096,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `TRAINING_SENTENCES` with `special_tokens` as atomic entries.

    Every named token (unk/bos/eos/pad) must also appear in `special_tokens`. The special tokens
    get the lowest ids, in the order given, so ids are stable across runs.
    """
    named = [t for t in (unk_token, bos_token, eos_token, pad_token) if t is not None]
    missing = [t for t in named if t not in special_tokens]
    if missing:
        raise ValueError(f"named tokens missing from special_tokens: {missing}")

    backend = Tokenizer(models.BPE(unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TRAINING_SENTENCES, trainer=trainer)
    if add_bos_token and bos_token is not None:
        from tokenizers import processors

        bos_id = backend.token_to_id(bos_token)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B", special_tokens=[(bos_token, bos_id)]
        )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk_token,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        padding_side=padding_side,
        model_max_length=model_max_length,
    )
    extra = [t for t in special_tokens if t not in named]
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer
