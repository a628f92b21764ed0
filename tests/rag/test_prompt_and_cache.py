"""The prompt built from retrieved pages, and the answer cache's keys, LRU and lifetime."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from pagelens.errors import UnprocessableDocument
from pagelens.rag.cache import AnswerCache, CachedAnswer, answer_key, normalize_question
from pagelens.rag.generator import Usage
from pagelens.rag.prompt import NO_TEXT_LAYER, PromptPage, build_messages, check_text_layers, jpeg_data_uri
from tests.conftest import make_page


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_page_images_become_jpeg_data_uris_within_the_pixel_limit_aspect_kept():
    big = decode(jpeg_data_uri(make_page(1600, 2000, 1), 1_000_000))
    assert big.format == "JPEG" and 990_000 < big.width * big.height <= 1_000_000
    assert abs(big.width / big.height - 0.8) < 0.01
    small = decode(jpeg_data_uri(make_page(300, 200, 2).convert("L"), 1_000_000))
    assert small.size == (300, 200) and small.mode == "RGB"


def test_a_vision_prompt_numbers_the_pages_in_order_then_asks_the_question():
    pages = [PromptPage(n, f"doc{n}.pdf", 10 + n, image=f"data:image/jpeg;base64,{n}") for n in (1, 2, 3)]
    system, user = build_messages("What was revenue?", pages)
    assert system["role"] == "system" and "[1]" in system["content"] and "cite" in system["content"].lower()
    parts = user["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert images == [page.image for page in pages]
    labels = [p["text"] for p in parts if p["type"] == "text" and p["text"].startswith("[")]
    assert labels == ["[1] doc1.pdf, page 11", "[2] doc2.pdf, page 12", "[3] doc3.pdf, page 13"]
    assert parts[-1]["type"] == "text" and "What was revenue?" in parts[-1]["text"]
    # each label comes right before its page
    for label, page in zip(labels, pages, strict=True):
        at = next(i for i, p in enumerate(parts) if p.get("text") == label)
        assert parts[at + 1]["image_url"]["url"] == page.image


def test_a_text_prompt_holds_each_pages_text_or_says_it_has_none():
    pages = [PromptPage(1, "a.pdf", 1, text="Revenue 42 M"), PromptPage(2, "scan.png", 1, text=None),
             PromptPage(3, "a.pdf", 2, text="   ")]  # fmt: skip
    _system, user = build_messages("Revenue?", pages, images=False)
    text = user["content"]
    assert isinstance(text, str) and "[1] a.pdf, page 1:\nRevenue 42 M" in text
    assert text.count(NO_TEXT_LAYER) == 2 and text.index("[2]") < text.index("[3]") < text.index("Revenue?")
    check_text_layers(pages)  # one page has text: fine
    with pytest.raises(UnprocessableDocument, match="--llm-images"):
        check_text_layers(pages[1:])


def key(**changes):
    fields = dict(collection="c", generation=1, question="What was revenue?", k=3, mode="exact", prefetch=None,
                  filter={"b": 1, "a": {"$gte": 2}}, model="m", max_tokens=512, images=True)  # fmt: skip
    return answer_key(**{**fields, **changes})


def test_keys_normalize_the_question_and_differ_by_everything_else():
    assert normalize_question("  What  WAS\trevenue? ") == "what was revenue?"
    assert key() == key(question="what was   REVENUE?") == key(filter={"a": {"$gte": 2}, "b": 1})
    for change in ({"generation": 2}, {"k": 4}, {"mode": "fast"}, {"prefetch": 50}, {"filter": None},
                   {"model": "n"}, {"max_tokens": 10}, {"images": False}, {"collection": "d"}):  # fmt: skip
        assert key(**change) != key(), change


def test_the_cache_drops_the_least_recently_used_and_expired_answers():
    now = [0.0]
    cache = AnswerCache(2, ttl_seconds=10, clock=lambda: now[0])
    answer = CachedAnswer(("a", "b"), (), "m", Usage(1, 2))
    cache.put(key(k=1), answer)
    cache.put(key(k=2), answer)
    assert cache.get(key(k=1)) is answer  # now the most recent
    cache.put(key(k=3), answer)
    assert cache.get(key(k=2)) is None and cache.get(key(k=1)) is answer and answer.text == "ab"
    now[0] = 11
    assert cache.get(key(k=3)) is None and (cache.hits, cache.misses) == (2, 2)
    off = AnswerCache(0, ttl_seconds=10)
    off.put(key(), answer)
    assert off.get(key()) is None and len(off) == 0
