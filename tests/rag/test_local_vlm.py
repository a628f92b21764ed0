"""TransformersVLM, the in-process answer model, on the tiny random-weight Qwen2.5-VL chat checkpoint:
loading, the Generator contract, images reaching the model, bad input, early close, one generation
at a time, and an event loop that stays free."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest
import torch

from pagelens.errors import InvalidInput, ModelLoadError, ModelNotReady
from pagelens.models import hardware
from pagelens.rag.generator import Finished, Generator, TextDelta
from pagelens.rag.local_vlm import TransformersVLM
from tests.conftest import encode, make_page

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the revenue of the company in 2023?"}]


def page_uri(width: int = 300, height: int = 400, seed: int = 1) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode(make_page(width, height, seed), "JPEG")).decode()


def with_image(uri: str, text: str = "What is the revenue?") -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


async def collect(vlm, messages, max_tokens: int) -> list:
    return [event async for event in vlm.stream(messages, max_tokens=max_tokens)]


async def wait_for_record(vlm, previous, timeout: float = 30.0):
    """The decode thread's record of the generation after `previous` (it lands just after the stream ends)."""
    deadline = time.monotonic() + timeout
    while vlm.last_generation is previous:
        assert time.monotonic() < deadline, "the decode thread recorded no generation"
        await asyncio.sleep(0.01)
    return vlm.last_generation


def test_loads_the_checkpoint_with_the_embedders_device_rules(tiny_vlm_dir):
    vlm = TransformersVLM.load(str(tiny_vlm_dir), device="auto", dtype="float32")  # no CUDA here: the CPU
    try:
        assert isinstance(vlm, Generator)
        assert vlm.model == str(tiny_vlm_dir)
        assert vlm.accepts_images
        assert vlm.device == hardware.resolve_device("auto")
        assert vlm.dtype == torch.float32
        assert vlm.attention == "sdpa"  # auto: the best the model supports that loads
        assert type(vlm._model).__name__ == "Qwen2_5_VLForConditionalGeneration"
        assert vlm.context_length == 4096
    finally:
        vlm.close()


def test_refuses_what_it_cannot_serve(tiny_vlm_dir, tiny_model, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            TransformersVLM.load(str(tiny_vlm_dir), device="cuda")
    with pytest.raises(ModelLoadError, match="unknown attention"):
        TransformersVLM.load(str(tiny_vlm_dir), attn="fast")
    with pytest.raises(ModelLoadError, match="no chat template"):  # a ColQwen2.5 retriever: no chat model
        TransformersVLM.load(str(tiny_model), dtype="float32")
    with pytest.raises(ModelLoadError, match="does not exist"):
        TransformersVLM.load(str(tmp_path / "missing"))


def test_streams_text_deltas_then_one_finished_with_the_usage(tiny_vlm):
    events = asyncio.run(collect(tiny_vlm, QUESTION, max_tokens=16))
    *deltas, last = events
    assert deltas and all(isinstance(event, TextDelta) and event.text for event in deltas)
    assert isinstance(last, Finished)
    assert last.finish_reason == "length"  # random weights never end their turn within 16 tokens
    assert last.usage.completion_tokens == 16
    # the prompt as the chat template renders it, tokenized
    prompt = tiny_vlm.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )  # fmt: skip
    assert last.usage.prompt_tokens == prompt["input_ids"].shape[1]
    # the deltas are exactly the model's own greedy continuation, decoded
    with torch.inference_mode():
        output = tiny_vlm._model.generate(**prompt, max_new_tokens=16, do_sample=False)
    expected = tiny_vlm.tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "".join(delta.text for delta in deltas) == expected


def test_sixteen_tokens_take_well_under_a_second(tiny_vlm):
    asyncio.run(collect(tiny_vlm, QUESTION, max_tokens=4))  # warm
    started = time.perf_counter()
    events = asyncio.run(collect(tiny_vlm, QUESTION, max_tokens=16))
    elapsed = time.perf_counter() - started
    assert events[-1].usage.completion_tokens == 16
    assert elapsed < 5.0, f"16 tokens took {elapsed:.2f} s"  # ~0.1-0.2 s on one thread of a busy 2-core host


def test_an_image_part_reaches_the_model_as_its_image_tokens(tiny_vlm):
    text_only = asyncio.run(collect(tiny_vlm, [{"role": "user", "content": "What is the revenue?"}], 1))[-1]
    small = asyncio.run(collect(tiny_vlm, with_image(page_uri(140, 196)), 1))[-1]
    large = asyncio.run(collect(tiny_vlm, with_image(page_uri(300, 400)), 1))[-1]  # the tiny processor's cap
    grid = tiny_vlm.processor.image_processor(images=[make_page(140, 196, 1)], return_tensors="pt")["image_grid_thw"]
    image_tokens = int(grid.prod()) // 4  # 2x2 patches merge into one <|image_pad|>
    # <|vision_start|> + the image's tokens + <|vision_end|>
    assert small.usage.prompt_tokens == text_only.usage.prompt_tokens + image_tokens + 2
    assert large.usage.prompt_tokens > small.usage.prompt_tokens  # a bigger page, more image tokens


def test_two_images_in_one_message_both_count(tiny_vlm):
    def prompt_tokens(n_images: int) -> int:
        parts = [{"type": "image_url", "image_url": {"url": page_uri(seed=i)}} for i in range(n_images)]
        messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "What is the revenue?"}]}]
        return asyncio.run(collect(tiny_vlm, messages, 1))[-1].usage.prompt_tokens

    none, one, two = prompt_tokens(0), prompt_tokens(1), prompt_tokens(2)
    assert one > none and two - none == 2 * (one - none)


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], r"messages\[0\].role: .tool. is not one of"),
        ([{"role": "user", "content": 3}], r"messages\[0\].content: expected a string"),
        ([{"role": "user", "content": [{"type": "audio"}]}], r"messages\[0\].content\[0\]"),
        (with_image("data:image/png;base64,bm90IGFuIGltYWdl"), r"messages\[0\].content\[0\].image_url.url"),
        (with_image("data:image/png;base64,@@@"), r"messages\[0\].content\[0\].image_url.url: invalid base64"),
        (with_image("https://example.com/page.png"), "only data URIs"),
        (with_image(page_uri(4000, 10)), "processor refused them: absolute aspect ratio"),
        ([{"role": "system", "content": "Be brief."}, *with_image("")], r"messages\[1\].content\[0\].image_url.url"),
    ],
)
def test_bad_messages_are_invalid_input_naming_the_part(tiny_vlm, messages, named):
    with pytest.raises(InvalidInput, match=named):
        asyncio.run(collect(tiny_vlm, messages, 4))


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_refused(tiny_vlm):
    with pytest.raises(InvalidInput, match=r"max_tokens: the prompt is .* over the model's context of 4096"):
        asyncio.run(collect(tiny_vlm, QUESTION, 4090))
    with pytest.raises(InvalidInput, match="max_tokens"):
        asyncio.run(collect(tiny_vlm, QUESTION, 0))


def test_closing_the_stream_early_stops_decoding(tiny_vlm):
    async def scenario():
        previous = tiny_vlm.last_generation
        stream = tiny_vlm.stream(QUESTION, max_tokens=2000)
        deltas = 0
        async for event in stream:
            deltas += isinstance(event, TextDelta)
            if deltas == 2:
                break
        await stream.aclose()
        return await wait_for_record(tiny_vlm, previous)

    record = asyncio.run(scenario())
    assert record.finish_reason == "cancelled"
    assert 2 <= record.completion_tokens < 50  # stopped within a few tokens of the close, not at 2000


def test_cancelling_the_consumer_stops_decoding(tiny_vlm):
    async def scenario():
        previous = tiny_vlm.last_generation
        first = asyncio.Event()

        async def consume():
            async for _ in tiny_vlm.stream(QUESTION, max_tokens=2000):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await wait_for_record(tiny_vlm, previous)

    record = asyncio.run(scenario())
    assert record.finish_reason == "cancelled" and record.completion_tokens < 50


def test_one_generation_at_a_time(tiny_vlm):
    async def scenario():
        timeline: list[tuple[str, object]] = []

        async def consume(name):
            async for event in tiny_vlm.stream(QUESTION, max_tokens=24):
                timeline.append((name, event))

        await asyncio.gather(consume("a"), consume("b"))
        return timeline

    timeline = asyncio.run(scenario())
    names = [name for name, _ in timeline]
    first, second = names[0], ({"a", "b"} - {names[0]}).pop()
    end = next(i for i, (name, event) in enumerate(timeline) if isinstance(event, Finished))
    assert timeline[end][0] == first
    assert names[: end + 1] == [first] * (end + 1)  # nothing of the second interleaves with the first
    assert names[end + 1 :] == [second] * (len(names) - end - 1)
    assert isinstance(timeline[-1][1], Finished)
    texts = {name: "".join(e.text for n, e in timeline if n == name and isinstance(e, TextDelta)) for name in "ab"}
    assert texts["a"] == texts["b"]  # the same prompt, greedy: the same answer, undisturbed by the other


def test_a_request_whose_consumer_leaves_while_queued_never_runs(tiny_vlm, monkeypatch):
    """The running generation is held at its start (a gate before the real `_generate`), so the
    second request is surely queued behind it when its consumer leaves, however fast the model."""
    started, release = threading.Event(), threading.Event()
    generate = tiny_vlm._generate

    def gated(request):
        started.set()
        assert release.wait(30), "the test never released the running generation"
        return generate(request)

    monkeypatch.setattr(tiny_vlm, "_generate", gated)

    async def scenario():
        holder = asyncio.create_task(collect(tiny_vlm, QUESTION, 20))
        assert await asyncio.to_thread(started.wait, 30), "the first request never started"
        waiting = asyncio.create_task(collect(tiny_vlm, with_image(page_uri()), 200))
        deadline = time.monotonic() + 30
        while tiny_vlm._queue.qsize() < 1:  # prepared and queued behind the held generation
            assert time.monotonic() < deadline, "the second request was never queued"
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert isinstance((await holder)[-1], Finished)
        while tiny_vlm.last_generation.finish_reason != "cancelled":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return tiny_vlm.last_generation

    record = asyncio.run(scenario())
    assert record.completion_tokens == 0 and record.prompt_tokens > 50  # the image prompt, skipped


def test_the_event_loop_stays_free_while_the_model_decodes(tiny_vlm):
    async def scenario():
        ticks, gaps = 0, []
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last, ticks = now, ticks + 1

        tick_task = asyncio.create_task(ticker())
        started = time.perf_counter()
        events = await collect(tiny_vlm, with_image(page_uri(600, 800)), 100)
        elapsed = time.perf_counter() - started
        done.set()
        await tick_task
        return events, ticks, elapsed

    events, ticks, elapsed = asyncio.run(scenario())
    assert events[-1].usage.completion_tokens == 100
    assert ticks >= elapsed / 0.05  # ticking all along (at least one tick per 50 ms), never stalled for the run


def test_closing_fails_the_running_and_the_queued_requests_and_refuses_new_ones(tiny_vlm_dir):
    vlm = TransformersVLM.load(str(tiny_vlm_dir), device="cpu", dtype="float32")

    async def scenario():
        running = asyncio.Event()

        async def long_one():
            async for _ in vlm.stream(QUESTION, max_tokens=3000):
                running.set()

        first = asyncio.create_task(long_one())
        await running.wait()
        second = asyncio.create_task(collect(vlm, QUESTION, 8))
        await asyncio.sleep(0.3)  # queued behind the first
        await vlm.aclose()
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(scenario())
    assert isinstance(first, ModelNotReady) and "closed during this generation" in first.message
    assert isinstance(second, ModelNotReady) and "closed before this request's turn" in second.message
    assert not vlm._thread.is_alive()
    with pytest.raises(ModelNotReady, match="closed"):
        asyncio.run(collect(vlm, QUESTION, 4))


def test_the_qwen2_vl_backbone_answers_too(tmp_path):
    from pagelens.testing import build_tiny_vlm

    vlm = TransformersVLM.load(str(build_tiny_vlm(tmp_path, backbone="qwen2_vl")), device="cpu", dtype="float32")
    try:
        assert type(vlm._model).__name__ == "Qwen2VLForConditionalGeneration"
        last = asyncio.run(collect(vlm, with_image(page_uri()), 8))[-1]
        assert isinstance(last, Finished) and 1 <= last.usage.completion_tokens <= 8
        assert last.usage.prompt_tokens > 50  # the page's image tokens are in the prompt
    finally:
        vlm.close()


def test_another_familys_processor_and_chat_template_work_the_same_way(tmp_path):
    """Gemma 3: its own processor, image tokens and chat template, through the same message conversion."""
    from pagelens.testing import build_tiny_checkpoint

    directory = build_tiny_checkpoint("bigemma3", tmp_path)  # a Gemma 3 backbone with Gemma 3's processor
    vlm = TransformersVLM.load(str(directory), device="cpu", dtype="float32")
    try:
        assert type(vlm._model).__name__ == "Gemma3ForConditionalGeneration"
        text = asyncio.run(collect(vlm, [{"role": "user", "content": "What?"}], 4))[-1]
        image = asyncio.run(collect(vlm, with_image(page_uri(), "What?"), 4))[-1]
        assert text.usage.completion_tokens == 4 == image.usage.completion_tokens
        assert image.usage.prompt_tokens > text.usage.prompt_tokens  # the image's tokens are in the prompt
    finally:
        vlm.close()
