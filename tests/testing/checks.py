"""Checks shared by the tiny-checkpoint tests: one batched forward against each input alone."""

from __future__ import annotations

import torch

TOLERANCE = 1e-4


class BatchMismatch(AssertionError):
    """An input embedded alone differs from its rows in a padded batch."""


def forward(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch)


def embed_and_check(model, process, items, *, multi_vector: bool, padding_side: str | None = "left", batch=None):
    """Embed `items` as one batch (or the given `batch` of them) and check it; return `(batch, output)`.

    Checks: finite values; Col* rows unit-norm where the mask is 1 and zero at padding, Bi* vectors
    unit-norm; different inputs embed differently; padding on `padding_side` (None: no padding
    expected or checked); each input alone equals its rows in the batch within TOLERANCE (else
    BatchMismatch).
    """
    batch = process(items) if batch is None else batch
    output = forward(model, batch)
    mask = batch["attention_mask"].bool()
    assert torch.isfinite(output).all()
    if padding_side is not None:
        assert not mask.all(), "inputs of different lengths must be padded"
        assert mask[:, -1 if padding_side == "left" else 0].all(), f"padding side must be {padding_side}"
    if multi_vector:
        assert output.shape == (*mask.shape, 128)
        norms = output.norm(dim=-1)
        torch.testing.assert_close(norms[mask], torch.ones_like(norms[mask]), rtol=0, atol=1e-5)
        assert torch.count_nonzero(output[~mask]) == 0, "padded positions must be zero rows"
        first, second = output[0][mask[0]], output[1][mask[1]]
    else:
        assert output.shape == (len(items), model.config.text_config.hidden_size)
        torch.testing.assert_close(output.norm(dim=-1), torch.ones(len(items)), rtol=0, atol=1e-5)
        first, second = output[0], output[1]
    assert not torch.allclose(first[-1], second[-1], atol=1e-3), "different inputs must embed differently"

    for index, item in enumerate(items):
        alone_batch = process([item])
        alone, in_batch = forward(model, alone_batch)[0], output[index]
        if multi_vector:
            alone, in_batch = alone[alone_batch["attention_mask"][0].bool()], in_batch[mask[index]]
        assert alone.shape == in_batch.shape
        difference = (alone - in_batch).abs().max().item()
        if difference > TOLERANCE:
            raise BatchMismatch(f"input {index}: alone vs batched differ by {difference:.3g}")
    return batch, output


def check_checkpoint_files(path, family) -> None:
    """config.json names the family's class and backbone, and the weights and processor files exist."""
    import json

    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [family.model_class]
    assert config["model_type"] == family.model_types[0]
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name
