"""The recall sampler (service/recall.py): samples at its rate, never blocks the caller, drops
what its bounded queue cannot hold, runs checks on one lowest-priority thread, stops cleanly."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from pagelens.service.recall import LOWEST_PRIORITY, RecallSampler


def test_the_sample_rate_is_honoured():
    never, always, some = RecallSampler(0.0), RecallSampler(1.0), RecallSampler(0.25, seed=1)
    ran = []
    try:
        assert not any(never.offer(lambda cancelled: ran.append("never")) for _ in range(100))
        assert all(always.offer(lambda cancelled: ran.append("always")) for _ in range(20))
        for _ in range(2000):
            some.offer(lambda cancelled: None)
        always.wait_idle()
        some.wait_idle()
    finally:
        for sampler in (never, always, some):
            sampler.close()
    assert ran == ["always"] * 20
    assert 400 < some.stats()["sampled"] < 600  # 25% of 2000 (the queue held what it could; the rest dropped)
    assert never._worker is None  # a rate of 0 starts no thread


def test_a_full_queue_drops_samples_without_blocking_the_caller():
    sampler = RecallSampler(1.0, queue_size=2)
    release = threading.Event()
    try:
        sampler.offer(lambda cancelled: release.wait(10))  # the worker is busy with this one
        deadline = time.monotonic() + 5
        while sampler._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.perf_counter()
        queued = [sampler.offer(lambda cancelled: None) for _ in range(10)]
        assert time.perf_counter() - started < 0.5
        assert queued == [True, True] + [False] * 8
        assert sampler.stats()["dropped"] == 8
        release.set()
        sampler.wait_idle()
        assert sampler.stats()["checked"] == 3
    finally:
        release.set()
        sampler.close()


def test_a_failing_check_is_counted_and_the_worker_goes_on():
    sampler = RecallSampler(1.0)
    try:
        sampler.offer(lambda cancelled: 1 / 0)
        sampler.offer(lambda cancelled: None)
        sampler.wait_idle()
        assert sampler.stats()["failed"] == 1 and sampler.stats()["checked"] == 1
    finally:
        sampler.close()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_checks_run_at_the_lowest_cpu_priority():
    sampler = RecallSampler(1.0)
    seen = []
    try:
        sampler.offer(lambda cancelled: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        sampler.wait_idle()
    finally:
        sampler.close()
    assert seen == [LOWEST_PRIORITY]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the caller's thread is untouched


def test_close_tells_a_running_check_to_give_up_and_drops_the_queued_ones():
    sampler = RecallSampler(1.0)
    started, steps, ran = threading.Event(), [], []

    def long_check(cancelled):
        started.set()
        while not cancelled():
            steps.append(1)
            time.sleep(0.01)

    sampler.offer(long_check)
    sampler.offer(lambda cancelled: ran.append(1))
    assert started.wait(10)
    began = time.monotonic()
    sampler.close()
    assert time.monotonic() - began < 2 and not sampler._worker.is_alive()
    assert ran == [] and sampler.offer(lambda cancelled: None) is False


def test_a_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        RecallSampler(1.5)
