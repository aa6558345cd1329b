"""Garbage collection on a timer (stream/gcpolicy.py): new cycles every time, frozen ones at the full collection."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from stream.gcpolicy import Collections, Pauses, collected_every


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def wait_until_freed(ref: weakref.ref, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


@pytest.fixture
def thawed() -> Iterator[None]:
    """The collector as the test found it: on, nothing frozen."""
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_cycles_are_collected_on_the_timer_and_gc_is_restored():
    assert gc.isenabled()
    with collected_every(0.02):
        assert not gc.isenabled()
        ref = weakref.ref(Node())
        assert wait_until_freed(ref)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_young_collection_frees_new_cycles_and_leaves_frozen_ones_to_the_full_one(thawed):
    plan = Collections(full_seconds=100.0, now=0.0)
    old = Node()
    old_ref = weakref.ref(old)
    assert not plan.collect(now=1.0)  # young: `old` survives and is frozen
    assert gc.get_freeze_count() > 0
    del old
    new_ref = weakref.ref(Node())
    assert not plan.collect(now=50.0)
    assert new_ref() is None  # new since the last collection: freed
    assert old_ref() is not None  # frozen before it became garbage: not looked at
    assert plan.collect(now=100.0)  # full_seconds after the start: thawed and collected
    assert old_ref() is None
    assert not plan.collect(now=150.0)  # the next full one is due 100 s after this one
    assert plan.collect(now=200.0)


def test_frozen_cycles_are_collected_by_the_timed_full_collection():
    node = Node()
    ref = weakref.ref(node)
    gc.freeze()  # frozen while alive: the young collections never look at it again
    del node
    with collected_every(0.02, full_seconds=0.3):
        assert wait_until_freed(ref)  # by the full collection, which thaws first


def test_every_timed_collection_and_its_pause_is_counted():
    pauses = Pauses()
    with collected_every(0.02, pauses=pauses):
        ref = weakref.ref(Node())
        assert wait_until_freed(ref)
    assert pauses.collections >= 1
    assert 0 < pauses.max_s <= pauses.total_s
    summary = pauses.summary()
    assert summary["collections"] == pauses.collections and summary["max_s"] == round(pauses.max_s, 4)


def test_zero_leaves_the_collector_alone():
    with collected_every(0):
        assert gc.isenabled()
