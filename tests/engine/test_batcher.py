"""Engine behaviour with a fake backend: batching across callers, ordering, OOM splitting,
admission control, priority of queries, bad input, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from pagelens.engine import Engine, EngineConfig
from pagelens.errors import BackendFailure, InvalidInput, ModelNotReady, Overloaded, PayloadTooLarge
from pagelens.testing.fake import FakeBackend, embed_alone
from tests.conftest import encode, make_page


def test_results_come_back_in_input_order_and_equal_single_input_results(pages):
    backend = FakeBackend()
    with Engine(backend, EngineConfig(max_batch_images=4)) as engine:
        images = engine.embed_images(pages)
        queries = engine.embed_queries(["alpha", "beta gamma", "delta epsilon zeta"])
    for page, got in zip(pages, images, strict=True):
        np.testing.assert_array_equal(got, embed_alone(backend, "image", page))
    assert [q.shape[0] for q in queries] == [11, 12, 13]
    assert all(q.dtype == np.float32 for q in queries)


def test_float16_output_on_request(pages):
    with Engine(FakeBackend()) as engine:
        (half,) = engine.embed_images(pages[:1], dtype="float16")
        (full,) = engine.embed_images(pages[:1])
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=1e-3)


def test_fifty_concurrent_callers_get_their_own_results_and_batches_form_across_them():
    backend = FakeBackend(forward_seconds=0.01)
    config = EngineConfig(max_batch_images=8, max_batch_queries=16, max_wait_ms=20)
    callers = []
    for number in range(50):
        if number % 2:
            callers.append(("image", [make_page(100 + number * 7, 120 + number, number)]))
        else:
            callers.append(("query", [f"question {number}", f"another question {number} about tables"]))
    with Engine(backend, config) as engine:

        def call(kind_items):
            kind, items = kind_items
            return engine.embed_images(items) if kind == "image" else engine.embed_queries(items)

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(call, callers))
    for (kind, items), got in zip(callers, results, strict=True):
        assert len(got) == len(items)
        for item, vectors in zip(items, got, strict=True):
            np.testing.assert_array_equal(vectors, embed_alone(backend, kind, item))
    assert max(len(batch) for batch in backend.batches) > 2, "no batch formed across callers"
    assert all(len({item.kind for item in batch}) == 1 for batch in backend.batches), "a batch mixed kinds"


def test_token_budget_caps_padded_batch_size():
    backend = FakeBackend(forward_seconds=0.005)
    config = EngineConfig(max_batch_images=16, max_batch_tokens=200, max_wait_ms=50)
    # 1 + (w*h)//10_000 tokens: 600x800 -> 49, 100x100 -> 2, 2000x1000 -> 201 (over the budget alone)
    sizes = [(600, 800)] * 6 + [(100, 100)] * 6 + [(2000, 1000)]
    images = [make_page(w, h, i) for i, (w, h) in enumerate(sizes)]
    with Engine(backend, config) as engine:
        results = engine.embed_images(images)
    assert len(results) == len(images)
    for batch in backend.batches:
        padded = len(batch) * max(item.n_tokens for item in batch)
        assert len(batch) == 1 or padded <= 200
    assert any(len(b) == 1 and b[0].n_tokens == 201 for b in backend.batches), "oversized item not run alone"


def _oom_when(predicate):
    def hook(batch):
        if predicate(batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return hook


def test_out_of_memory_on_a_batch_of_eight_splits_until_every_item_succeeds():
    backend = FakeBackend(on_forward=_oom_when(lambda batch: len(batch) > 2))
    images = [make_page(200 + 10 * i, 200, i) for i in range(8)]
    with Engine(backend, EngineConfig(max_batch_images=8, max_wait_ms=200)) as engine:
        results = engine.embed_images(images)
        assert engine.stats.batch_splits >= 3
    assert len(results) == 8
    for image, got in zip(images, results, strict=True):
        np.testing.assert_array_equal(got, embed_alone(FakeBackend(), "image", image))


def test_item_that_fails_alone_gets_its_own_error_and_neighbours_succeed():
    poisoned_tokens = 1 + (333 * 333) // 10_000
    backend = FakeBackend(
        on_forward=_oom_when(lambda batch: any(i.kind == "image" and i.n_tokens == poisoned_tokens for i in batch))
    )
    images = [make_page(200, 200, i) for i in range(8)]
    images[5] = make_page(333, 333, 5)
    with Engine(backend, EngineConfig(max_batch_images=8, max_wait_ms=200)) as engine:
        results = engine.embed_images(images, return_exceptions=True)
        with pytest.raises(BackendFailure) as raised:
            engine.embed_images(images)
        assert engine.alive, "the engine died after a failing batch"
        assert engine.embed_queries(["still serving"])[0].shape == (12, 16)
    assert raised.value.index == 5
    assert isinstance(results[5], BackendFailure)
    assert results[5].index == 5 and "out of memory" in results[5].message
    for position, got in enumerate(results):
        if position != 5:
            np.testing.assert_array_equal(got, embed_alone(FakeBackend(), "image", images[position]))


def test_any_exception_in_forward_is_isolated_and_never_kills_the_worker():
    def explode(batch):
        if any(item.n_tokens == 13 for item in batch):  # the 3-word query
            raise RuntimeError("kernel exploded")

    with Engine(FakeBackend(on_forward=explode), EngineConfig(max_wait_ms=50)) as engine:
        results = engine.embed_queries(["one", "one two three", "one two"], return_exceptions=True)
        assert isinstance(results[1], BackendFailure) and "kernel exploded" in results[1].message
        assert results[0].shape == (11, 16) and results[2].shape == (12, 16)
        assert engine.alive


def test_bad_inputs_are_rejected_with_their_index_before_any_work(pages):
    backend = FakeBackend()
    with Engine(backend, EngineConfig(max_image_pixels=1_000_000)) as engine:
        cases = [
            ([pages[0], b"not an image at all"], 1, "text"),
            ([encode(pages[1]), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40], 1, "corrupt"),
            ([pages[0], pages[1], Image.new("RGB", (0, 0))], 2, "zero size"),
            ([make_page(2000, 1000)], 0, "over the limit"),
            ([b"%PDF-1.7 ..."], 0, "PDF"),
        ]
        for images, index, reason in cases:
            with pytest.raises(InvalidInput) as raised:
                engine.embed_images(images)
            assert raised.value.index == index
            assert reason in raised.value.message
        for queries, index, reason in ([["ok", ""], 1, "empty"], [[3], 0, "string"], [["a", None], 1, "string"]):
            with pytest.raises(InvalidInput) as raised:
                engine.embed_queries(queries)
            assert raised.value.index == index and reason in raised.value.message
        assert backend.prepared_count == 0, "a call with a bad input was partly enqueued"
        assert engine.embed_queries(["fine"])[0].shape == (11, 16)


def test_full_queue_answers_overloaded_at_once_and_huge_calls_are_too_large():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: release.wait(5))
    config = EngineConfig(max_queued_items=4, max_batch_queries=1, max_wait_ms=0)
    with Engine(backend, config) as engine:
        futures = engine.submit_queries(["a", "b", "c"])
        started = time.monotonic()
        with pytest.raises(Overloaded):
            engine.submit_queries(["d", "e"])
        assert time.monotonic() - started < 0.5
        with pytest.raises(PayloadTooLarge):
            engine.submit_queries(["x"] * 5)
        release.set()
        assert [f.result(5).shape[0] for f in futures] == [11, 11, 11]
        assert engine.queue_depth == 0
        assert len(engine.embed_queries(["d", "e"])) == 2


@pytest.mark.parametrize("query_worker", [True, False], ids=["own-worker", "shared-worker"])
def test_queries_overtake_queued_images(query_worker):
    backend = FakeBackend(forward_seconds=0.05)
    with Engine(backend, EngineConfig(max_batch_images=1, max_wait_ms=0, query_worker=query_worker)) as engine:
        image_futures = engine.submit_images([make_page(100, 100, i) for i in range(10)])
        time.sleep(0.06)
        query_future = engine.submit_queries(["urgent"])[0]
        query_future.result(5)
        still_pending = sum(not f.done() for f in image_futures)
        for future in image_futures:
            future.result(5)
    assert still_pending >= 5, f"query waited behind the ingest ({still_pending} images left when it finished)"


def test_async_api_and_cancellation(pages):
    backend = FakeBackend(forward_seconds=0.02)

    async def scenario(engine):
        images, queries = await asyncio.gather(engine.aembed_images(pages), engine.aembed_queries(["q one", "q two"]))
        slow = asyncio.ensure_future(engine.aembed_images([make_page(90, 90, i) for i in range(20)]))
        await asyncio.sleep(0.03)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return images, queries

    with Engine(backend, EngineConfig(max_batch_images=1)) as engine:
        images, queries = asyncio.run(scenario(engine))
        deadline = time.monotonic() + 2
        while engine.queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.queue_depth == 0, "cancelled items still in flight"
    assert len(images) == 3 and len(queries) == 2
    assert sum(len(b) for b in backend.batches) < 3 + 2 + 20, "cancelled items were still embedded"


def test_closed_engine_refuses_work_and_nothing_hangs():
    engine = Engine(FakeBackend(forward_seconds=0.01)).start()
    futures = engine.submit_queries([f"q{i}" for i in range(20)])
    engine.close()
    for future in futures:
        assert future.done()
        assert future.exception() is None or isinstance(future.exception(), ModelNotReady)
    with pytest.raises(ModelNotReady):
        engine.embed_queries(["late"])


def test_default_config_follows_the_backend_device():
    cpu_backend = FakeBackend()
    cpu_backend.device = torch.device("cpu")  # type: ignore[attr-defined]
    assert Engine(cpu_backend).config.max_batch_images == 1
    cuda_backend = FakeBackend()
    cuda_backend.device = torch.device("cuda")  # type: ignore[attr-defined]
    assert Engine(cuda_backend).config.max_batch_images == 8
    assert EngineConfig.for_device("cpu", max_batch_images=3).max_batch_images == 3
    assert EngineConfig.for_backend(cpu_backend, max_batch_images=2).max_batch_images == 2  # settings win


class SlowToPrepare(FakeBackend):
    """Tokenizing a query takes `prepare_seconds` (a real processor: ~1-10 ms)."""

    def __init__(self, prepare_seconds: float) -> None:
        super().__init__()
        self.prepare_seconds = prepare_seconds

    def prepare_query(self, text: str):
        time.sleep(self.prepare_seconds)
        return super().prepare_query(text)


def test_a_batch_waits_for_items_already_submitted_and_briefly_for_calls_not_made():
    backend = SlowToPrepare(0.02)
    with Engine(backend, EngineConfig(max_batch_queries=32, max_wait_ms=5000)) as engine:
        started = time.perf_counter()
        engine.embed_queries([f"question {n}" for n in range(8)])  # prepared one by one, 20 ms each
        assert [len(batch) for batch in backend.batches] == [8]  # held until the eighth was prepared
        engine.embed_queries(["a lone query"])
        elapsed = time.perf_counter() - started
    assert [len(batch) for batch in backend.batches] == [8, 1]
    assert elapsed < 2.5, f"{elapsed:.1f} s: a batch waited max_wait_ms (5 s) for callers that never came"


def test_a_burst_of_separate_calls_shares_a_forward_when_forwards_are_slow():
    """After a 1 s forward a batch lingers up to 50 ms (LINGER_SHARE) for calls not yet made:
    eight callers arriving 2 ms apart share one forward, and a lone call waits no longer."""
    backend = FakeBackend(forward_seconds=1.0)
    with Engine(backend, EngineConfig(max_batch_queries=32, max_wait_ms=5000)) as engine:
        engine.embed_queries(["the first forward sets the pace"])
        callers = []
        for number in range(8):
            callers.append(threading.Thread(target=engine.embed_queries, args=([f"caller {number}"],)))
            callers[-1].start()
            time.sleep(0.002)
        for caller in callers:
            caller.join()
        started = time.perf_counter()
        engine.embed_queries(["alone"])
        alone = time.perf_counter() - started
    assert [len(batch) for batch in backend.batches] == [1, 8, 1]
    assert alone < 1.0 + 1.0, f"a lone call took {alone:.2f} s (max_wait_ms is 5 s)"
