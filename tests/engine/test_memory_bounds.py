"""The engine's memory bounds with a fake backend: image bytes are checked from their header and
decoded by the preprocessing thread (errors per index), admission counts pixels, large images
are reduced before the processor, and preprocessing runs only a little ahead of the forward pass."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pagelens.engine import Engine, EngineConfig
from pagelens.engine import batcher as batcher_module
from pagelens.engine import inputs as inputs_module
from pagelens.errors import InvalidInput, Overloaded, PayloadTooLarge
from pagelens.testing.fake import FakeBackend, embed_alone
from tests.api.memory_probe import bilevel_png
from tests.conftest import encode, make_page


class RecordingBackend(FakeBackend):
    """A fake backend that records the size and mode of every image its processor sees."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[tuple[tuple[int, int], str]] = []

    def prepare_image(self, image):
        self.seen.append((image.size, image.mode))
        return super().prepare_image(image)


def test_image_bytes_are_decoded_by_the_preprocessing_thread_not_by_submit(monkeypatch):
    decoding_threads = []
    decode = inputs_module.decode_image

    def recording_decode(data, **kwargs):
        decoding_threads.append(threading.current_thread().name)
        return decode(data, **kwargs)

    monkeypatch.setattr(inputs_module, "decode_image", recording_decode)
    huge = bilevel_png(8000, 8000)  # 64 Mpx: ~256 MB once decoded to RGB
    with Engine(FakeBackend(), EngineConfig(max_wait_ms=0)) as engine:
        started = time.perf_counter()
        (future,) = engine.submit_images([huge])
        submit_seconds = time.perf_counter() - started
        future.result(60)
    assert submit_seconds < 0.2, f"submit took {submit_seconds:.2f} s: it decoded the image"
    assert decoding_threads and all(name.startswith("pagelens-preprocess") for name in decoding_threads)


def test_corrupt_pixel_data_fails_only_its_own_item_with_its_index():
    good = [encode(make_page(120, 90, seed)) for seed in range(3)]
    truncated = encode(make_page(300, 200, 9))[:400]  # the header is whole, the pixel data is not
    images = [good[0], truncated, good[1], good[2]]
    backend = FakeBackend()
    with Engine(backend, EngineConfig(max_batch_images=2, max_wait_ms=5)) as engine:
        results = engine.embed_images(images, return_exceptions=True)
        with pytest.raises(InvalidInput) as raised:
            engine.embed_images(images)
        assert engine.queue_depth == 0 and engine.queued_pixels == 0
    assert isinstance(results[1], InvalidInput) and results[1].index == 1 and "corrupt" in results[1].message
    assert raised.value.index == 1
    for position in (0, 2, 3):
        expected = embed_alone(FakeBackend(), "image", Image.open(io.BytesIO(images[position])))
        np.testing.assert_array_equal(results[position], expected)


def test_pixel_capacity_refuses_a_call_too_large_at_once_and_a_full_queue_with_overloaded():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: batch[0].kind == "image" and release.wait(10))
    config = EngineConfig(max_queued_pixels=100_000, max_image_pixels=1_000_000, max_batch_images=1, max_wait_ms=0)
    small, big = encode(make_page(200, 200)), encode(make_page(500, 400))  # 40,000 and 200,000 pixels
    with Engine(backend, config) as engine:
        with pytest.raises(PayloadTooLarge, match="queued pixels; split"):
            engine.submit_images([small, small, small])  # 120,000 pixels in one call
        (alone,) = engine.submit_images([big])  # over the capacity, but alone in an empty queue
        assert engine.queued_pixels == 200_000
        started = time.monotonic()
        with pytest.raises(Overloaded, match="image pixels in flight"):
            engine.submit_images([small])
        assert time.monotonic() - started < 0.5
        assert len(engine.embed_queries(["queries hold no pixels"])) == 1
        release.set()
        alone.result(10)
        assert engine.queued_pixels == 0
        assert len(engine.embed_images([small, small])) == 2
        assert engine.queued_pixels == 0 and engine.queue_depth == 0


def test_images_over_the_decode_cap_reach_the_processor_reduced_with_their_aspect():
    backend = RecordingBackend()
    config = EngineConfig(max_decoded_pixels=1_000_000, max_wait_ms=0)
    page = make_page(2400, 1600, 4)
    with Engine(backend, config) as engine:
        engine.embed_images(
            [encode(page), encode(page, "JPEG"), page, bilevel_png(3000, 2000), encode(make_page(80, 60))]
        )
    sizes = [size for size, _ in backend.seen]
    for width, height in sizes[:4]:
        assert width * height <= 1_000_000 and width * height > 900_000
        assert abs(width / height - 1.5) < 0.01
    assert sizes[4] == (80, 60), "a small image was resized"
    assert {mode for _, mode in backend.seen} == {"RGB"}


def test_preprocessing_runs_at_most_two_batches_ahead_and_queries_still_pass():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: batch[0].kind == "image" and release.wait(10))
    config = EngineConfig(max_batch_images=1, max_wait_ms=0)
    with Engine(backend, config) as engine:
        futures = engine.submit_images([encode(make_page(60, 60, i)) for i in range(12)])
        time.sleep(0.3)
        # one image in the blocked forward pass, `prepared_ahead` ready behind it, the rest still bytes
        assert backend.prepared_count <= 1 + config.prepared_ahead
        assert engine.embed_queries(["does a query still pass?"])[0].shape == (15, 16)
        release.set()
        assert all(future.result(10).shape[1] == 16 for future in futures)


def test_freed_heap_goes_back_to_the_os_after_an_image_burst_not_after_queries(monkeypatch):
    from pagelens.engine.heap import release_free_heap

    assert release_free_heap() is True  # glibc here
    calls = []
    monkeypatch.setattr(batcher_module, "release_free_heap", lambda: calls.append(1))
    with Engine(FakeBackend(), EngineConfig(max_batch_images=1, max_wait_ms=0)) as engine:
        engine.embed_queries(["no images here"])
        assert not calls
        engine.embed_images([encode(make_page(90, 60, seed)) for seed in range(3)])
        deadline = time.monotonic() + 2
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
    assert 1 <= len(calls) <= 3


def test_in_process_callers_wait_for_room_in_runs_instead_of_being_refused():
    """Ingest and library calls (`embed_images`) are split into runs within the capacities and wait
    for room, so a 300-DPI PDF batch or a busy HTTP queue never fails an ingest."""
    in_flight = []
    release = threading.Event()

    def hook(batch):
        in_flight.append(engine.queued_pixels)
        if batch[0].kind == "image":
            release.wait(10)

    backend = FakeBackend(on_forward=hook)
    config = EngineConfig(max_queued_pixels=100_000, max_batch_images=1, max_wait_ms=0)
    pages = [encode(make_page(200, 200, seed)) for seed in range(7)]  # 40,000 pixels each: 280,000 in all
    with Engine(backend, config) as engine:
        blocker = engine.submit_images(pages[:2])  # 80,000 in flight: the queue is nearly full
        with pytest.raises(Overloaded):
            engine.submit_images(pages[:1])  # the HTTP path is refused at once
        caller = ThreadPoolExecutor(1).submit(engine.embed_images, pages)
        time.sleep(0.2)
        assert not caller.done(), "the in-process call did not wait for room"
        release.set()
        results = caller.result(10)
        assert [f.result(5).shape for f in blocker] and len(results) == 7
        assert engine.queued_pixels == 0 and engine.queue_depth == 0
    assert max(in_flight) <= 100_000
    for page, got in zip(pages, results, strict=True):
        np.testing.assert_array_equal(got, embed_alone(FakeBackend(), "image", Image.open(io.BytesIO(page))))


def test_admission_splits_a_call_into_runs_within_both_capacities():
    from pagelens.engine.admission import Admission

    admission = Admission(max_items=3, max_pixels=100)
    assert admission.split([40, 40, 40, 10, 10, 10, 10, 500, 5]) == [(0, 2), (2, 5), (5, 7), (7, 8), (8, 9)]
    assert admission.split([]) == []
