"""Parity with colpali-engine on tiny real-architecture checkpoints, loaded through `from_pretrained`.

For every family, each output of pagelens' Embedder + Engine (inputs batched together, mixed page
sizes and query lengths) equals colpali-engine's forward on that input alone, within 1e-3 in
float32. LoRA adapters (vidore's format) are merged at load and must equal the unmerged adapter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pagelens.engine import Engine, EngineConfig
from pagelens.models import Embedder
from pagelens.models.families import get_family
from pagelens.testing import build_tiny_checkpoint, tiny_families

QUERIES = ["revenue?", "What was the total revenue of the company in the third quarter of 2023?", "tables"]
ADAPTER_FAMILIES = ["colqwen2_5", "colpali", "colidefics3", "colmodernvbert"]
# colpali-engine's sdpa forward of a lone PaliGemma query differs from its eager forward and from the
# same query in a padded batch (see PALIGEMMA_QUERY_NOTE in pagelens.models.families); the eager
# forward is the padding-independent reference.
REFERENCE_ATTENTION = {"colpali": "eager", "bipali": "eager"}
DYNAMIC_RESOLUTION = {"colqwen2_5", "colqwen2", "colidefics3", "colmodernvbert"}  # token count follows page size


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    cache: dict[tuple[str, bool], object] = {}

    def get(family: str, adapter: bool = False):
        if (family, adapter) not in cache:
            directory = tmp_path_factory.mktemp(f"{family}-{'lora' if adapter else 'merged'}")
            cache[family, adapter] = build_tiny_checkpoint(family, directory, adapter=adapter)
        return cache[family, adapter]

    return get


def reference_alone(model, processor, family, kind: str, payload) -> np.ndarray:
    """colpali-engine's documented inference on one input: processor -> model -> that input's rows."""
    inputs = processor.process_images([payload]) if kind == "image" else processor.process_queries([payload])
    with torch.inference_mode():
        output = model(**inputs)[0].float()
    if family.multi_vector:
        output = output[inputs["attention_mask"][0].bool()]
    return output.numpy()


def _assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    difference = float(np.abs(got - expected).max())
    assert difference <= 1e-3, f"{what}: max |difference| {difference:.2e}"


@pytest.mark.parametrize("family_name", tiny_families())
def test_batched_outputs_equal_colpali_engine_on_each_input_alone(family_name, checkpoints, pages):
    family = get_family(family_name)
    directory = checkpoints(family_name)
    embedder = Embedder.load(str(directory), device="cpu", dtype="float32")
    assert embedder.info.family == family_name
    assert embedder.info.multi_vector == family.multi_vector
    config = EngineConfig(max_batch_images=4, max_batch_queries=8, max_wait_ms=100)
    with Engine(embedder, config) as engine:
        images = engine.embed_images(pages)
        queries = engine.embed_queries(QUERIES)
        assert max(engine.stats.batch_sizes) > 1, "inputs were never batched together"

    _, processor_class = family.classes()
    attention = REFERENCE_ATTENTION.get(family_name, "sdpa")
    reference_model = family.from_pretrained(directory, dtype=torch.float32, attn_implementation=attention).eval()
    reference_processor = processor_class.from_pretrained(directory)
    for index, (page, got) in enumerate(zip(pages, images, strict=True)):
        expected = reference_alone(reference_model, reference_processor, family, "image", page)
        _assert_close(got, expected, f"{family_name} page {index}")
    for index, (query, got) in enumerate(zip(QUERIES, queries, strict=True)):
        expected = reference_alone(reference_model, reference_processor, family, "query", query)
        _assert_close(got, expected, f"{family_name} query {index}")
        lone = embedder.forward(embedder.collate([embedder.prepare_query(query)]))[0]
        _assert_close(got, lone, f"{family_name} query {index}, pagelens batched vs alone")
    if family_name in DYNAMIC_RESOLUTION:
        assert len({page.shape[0] for page in images}) > 1, "pages of different sizes gave equal token counts"
    if family.multi_vector:
        assert all(page.shape[1] == embedder.info.dim == 128 for page in images)
    else:
        assert all(vector.shape == (embedder.info.dim,) for vector in images + queries)


@pytest.mark.parametrize("family_name", ADAPTER_FAMILIES)
def test_lora_adapter_is_merged_and_equals_the_unmerged_adapter(family_name, checkpoints, pages):
    from peft import PeftModel

    family = get_family(family_name)
    adapter_dir = checkpoints(family_name, adapter=True)
    embedder = Embedder.load(str(adapter_dir), device="cpu", dtype="float32")
    assert not any("lora" in name for name, _ in embedder.model.named_parameters()), "adapter not merged"
    with Engine(embedder) as engine:
        (page,) = engine.embed_images(pages[:1])
        (query,) = engine.embed_queries(QUERIES[1:2])

    _, processor_class = family.classes()
    attention = REFERENCE_ATTENTION.get(family_name, "sdpa")
    base = family.from_pretrained(adapter_dir / "base", dtype=torch.float32, attn_implementation=attention).eval()
    processor = processor_class.from_pretrained(adapter_dir)
    base_page = reference_alone(base, processor, family, "image", pages[0])
    assert np.abs(base_page - page).max() > 1e-3, "the adapter changed nothing: the test could not tell"
    unmerged = PeftModel.from_pretrained(base, adapter_dir).eval()
    _assert_close(page, reference_alone(unmerged, processor, family, "image", pages[0]), f"{family_name} page")
    _assert_close(query, reference_alone(unmerged, processor, family, "query", QUERIES[1]), f"{family_name} query")
