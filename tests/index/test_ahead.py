"""run_ahead: the next item is produced while the caller works on the current one; errors reach
the caller at their item; a caller that stops early leaves no thread running and closes the source."""

from __future__ import annotations

import threading

import pytest

from pagelens.index.ahead import run_ahead


def test_the_next_item_is_produced_while_the_caller_works_on_the_current_one():
    produced = [threading.Event() for _ in range(3)]

    def items():
        for number in range(3):
            produced[number].set()
            yield number

    consumed = []
    for number in run_ahead(items()):
        if number < 2:  # still holding this item, the caller sees the next one made (not asked for yet)
            assert produced[number + 1].wait(timeout=10), f"item {number + 1} was not produced ahead"
        consumed.append(number)
    assert consumed == [0, 1, 2]


def test_an_error_reaches_the_caller_after_the_items_before_it():
    def failing():
        yield 1
        raise ValueError("page 2 is broken")

    received = []
    with pytest.raises(ValueError, match="page 2"):
        for item in run_ahead(failing()):
            received.append(item)
    assert received == [1]


def test_stopping_early_closes_the_source_and_leaves_no_thread():
    closed = threading.Event()

    def endless():
        try:
            number = 0
            while True:
                number += 1
                yield number
        finally:
            closed.set()

    before = threading.active_count()
    for item in run_ahead(endless()):
        if item == 3:
            break
    assert closed.is_set()
    assert threading.active_count() == before


def test_pipelines_compose_and_keep_order():
    stages = run_ahead(number * 10 for number in run_ahead(iter(range(20))))
    assert list(stages) == [number * 10 for number in range(20)]
