"""The blocked CPU attention: equal to sdpa on every mask shape it takes, sdpa's own result for the
calls it leaves to sdpa, and the same vectors as sdpa through real tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from pagelens.models import Embedder, cpu_attention
from pagelens.testing import build_tiny_checkpoint
from tests.conftest import make_page


class _Attention(torch.nn.Module):
    """What transformers' attention functions read from their module."""

    def __init__(self, is_causal: bool = False, groups: int = 1) -> None:
        super().__init__()
        self.is_causal = is_causal
        self.num_key_value_groups = groups


def qkv(batch: int, heads: int, length: int, dim: int, kv_heads: int | None = None, dtype=torch.float32):
    """Query/key/value as attention modules hand them over: `(batch, heads, len, dim)` transposed views."""
    generator = torch.Generator().manual_seed(heads * 1000 + length)
    kv_heads = kv_heads or heads
    widths = [heads * dim, kv_heads * dim, kv_heads * dim]
    packed = torch.randn(batch, length, sum(widths), generator=generator).to(dtype)
    q, k, v = packed.split(widths, dim=-1)
    return [t.view(batch, length, -1, dim).transpose(1, 2) for t in (q, k, v)]


def assert_blocked_matches_sdpa(q, k, v, mask=None):
    """`blocked_attention` equals torch's sdpa on the same inputs (float32 tolerances)."""
    out = cpu_attention.blocked_attention(q, k, v, mask, q.shape[-1] ** -0.5)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    return out


@pytest.fixture
def blocked_calls(monkeypatch) -> list:
    """Every attention call blocked (the row threshold lowered to one); the list counts the calls."""
    monkeypatch.setattr(cpu_attention, "MIN_QUERY_ROWS", 1)
    calls: list = []
    blocked = cpu_attention.blocked_attention
    monkeypatch.setattr(cpu_attention, "blocked_attention", lambda *args: calls.append(1) or blocked(*args))
    return calls


@pytest.mark.parametrize("heads", [12, 6, 5])  # blocks of 4, 3 and 1 heads
@pytest.mark.parametrize("length", [300, 512])  # a partial last row block, and none
def test_blocked_equals_sdpa_without_mask(heads, length):
    q, k, v = qkv(2, heads, length, 16)
    out = assert_blocked_matches_sdpa(q, k, v)
    assert out.shape == (2, length, heads, 16) and out.is_contiguous()


def test_blocked_equals_sdpa_with_boolean_and_additive_masks():
    length = 300
    q, k, v = qkv(2, 4, length, 16)
    keep = torch.ones(2, 1, length, length, dtype=torch.bool)
    keep[0, :, :, 250:] = False  # the first item is padded after 250 keys
    keep[1] = torch.ones(length, length, dtype=torch.bool).tril()  # the second attends causally
    additive = torch.zeros(2, 1, length, length).masked_fill(~keep, -1e4)
    for mask in (keep, additive):
        assert_blocked_matches_sdpa(q, k, v, mask)


def test_masks_broadcast_over_heads_and_query_rows():
    length = 260
    q, k, v = qkv(2, 4, length, 8)
    padding = torch.ones(2, 1, 1, length, dtype=torch.bool)
    padding[1, ..., 200:] = False
    per_head = torch.rand(1, 4, length, length, generator=torch.Generator().manual_seed(1)) > 0.3
    for mask in (padding, per_head):
        assert_blocked_matches_sdpa(q, k, v, mask)


def test_a_fully_masked_row_is_uniform_not_nan():
    length = 256
    q, k, v = qkv(1, 4, length, 8)
    mask = torch.ones(1, 1, length, length, dtype=torch.bool)
    mask[0, 0, 7] = False
    out = cpu_attention.blocked_attention(q, k, v, mask, 8**-0.5)
    assert not out.isnan().any()
    torch.testing.assert_close(out[0, 7], v[0].mean(dim=1), atol=1e-5, rtol=1e-4)


def test_the_function_repeats_shared_key_heads_and_matches_sdpa_in_bfloat16():
    q, k, v = qkv(1, 8, 384, 32, kv_heads=2, dtype=torch.bfloat16)
    module = _Attention(groups=4)
    out, weights = cpu_attention.cpu_blocked_attention_forward(module, q, k, v, None, scaling=0.2)
    expected, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.2)
    assert weights is None and out.dtype == torch.bfloat16 and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "case",
    ["short sequence", "causal without a mask", "float32", "dropout", "position bias", "one query over two keys"],
)
def test_calls_it_does_not_cover_are_sdpa_itself(case, monkeypatch):
    length = 64 if case == "short sequence" else 300
    dtype = torch.float32 if case == "float32" else torch.bfloat16
    q, k, v = qkv(2, 4, length, 16, dtype=dtype)
    q = q[:1] if case == "one query over two keys" else q  # sdpa broadcasts the batch
    module = _Attention(is_causal=case == "causal without a mask")
    extra = {"dropout": 0.1} if case == "dropout" else {}
    if case == "position bias":
        extra["position_bias"] = torch.zeros(2, 4, length, length, dtype=dtype)
    taken = []
    monkeypatch.setattr(cpu_attention, "blocked_attention", lambda *args: taken.append(args))
    torch.manual_seed(0)
    out, _ = cpu_attention.cpu_blocked_attention_forward(module, q, k, v, None, **extra)
    torch.manual_seed(0)
    expected, _ = sdpa_attention_forward(module, q, k, v, None, **extra)
    assert taken == [] and torch.equal(out, expected)


@pytest.mark.parametrize("family", ["colmodernvbert", "colqwen2_5", "colpali"])
def test_real_checkpoints_give_sdpas_vectors(family, tmp_path, blocked_calls):
    """Every attention call of a tiny checkpoint blocked (threshold lowered to one row): pages and a
    padded batch of queries embed as with sdpa, in bfloat16, per-vector cosine >= 0.999."""
    checkpoint = build_tiny_checkpoint(family, tmp_path / family)
    embedders = {
        attention: Embedder.load(str(checkpoint), device="cpu", dtype="bfloat16", attn=attention)
        for attention in ("cpu_blocked", "sdpa")
    }
    assert embedders["cpu_blocked"].info.attention == "cpu_blocked"
    outputs = {}
    for attention, embedder in embedders.items():
        pages = [embedder.prepare_image(make_page(300, 400, seed)) for seed in (1, 2)]
        queries = [embedder.prepare_query(text) for text in ("revenue?", "total revenue in the third quarter of 2023")]
        outputs[attention] = [embedder.forward(embedder.collate([page]))[0] for page in pages]
        outputs[attention] += embedder.forward(embedder.collate(queries))
    assert blocked_calls, "no attention call took the blocked path"
    for blocked_rows, sdpa_rows in zip(outputs["cpu_blocked"], outputs["sdpa"], strict=True):
        assert blocked_rows.shape == sdpa_rows.shape
        if blocked_rows.ndim == 1:
            blocked_rows, sdpa_rows = blocked_rows[None], sdpa_rows[None]
        cosine = (blocked_rows * sdpa_rows).sum(-1) / (
            np.linalg.norm(blocked_rows, axis=-1) * np.linalg.norm(sdpa_rows, axis=-1)
        )
        assert cosine.min() >= 0.999, f"{family}: worst per-vector cosine {cosine.min():.5f}"


def test_the_local_answer_model_generates_sdpas_tokens(tmp_path, blocked_calls):
    """A tiny Qwen2.5-VL chat model in bfloat16, every vision attention call blocked: greedy decoding
    of a page and a question gives sdpa's tokens, and the first step's logits match."""
    from pagelens.rag.local_vlm import TransformersVLM
    from pagelens.testing import build_tiny_vlm

    checkpoint = build_tiny_vlm(tmp_path / "vlm")
    message = [{"role": "user", "content": [{"type": "image", "image": make_page(200, 260, 1)},
                                            {"type": "text", "text": "What is the revenue?"}]}]  # fmt: skip
    generated = {}
    for attention in ("cpu_blocked", "sdpa"):
        vlm = TransformersVLM.load(str(checkpoint), device="cpu", dtype="bfloat16", attn=attention)
        try:
            assert vlm.attention == attention
            prompt = vlm.processor.apply_chat_template(
                message, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            with torch.inference_mode():
                output = vlm._model.generate(
                    **prompt, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True
                )
            generated[attention] = (output.sequences, output.logits[0].float())
        finally:
            vlm.close()
    assert blocked_calls, "no attention call took the blocked path"
    assert torch.equal(generated["cpu_blocked"][0], generated["sdpa"][0])
    cosine = F.cosine_similarity(generated["cpu_blocked"][1], generated["sdpa"][1], dim=-1)
    assert cosine.min() >= 0.999
